"""Knowledge-graph data: loaders, id maps, splits, inverse relations and the filter index."""

from imf_kg.data.filter_index import FilterIndex
from imf_kg.data.kg import EntityFeatures, KnowledgeGraph, LoadReport

__all__ = ["FilterIndex", "EntityFeatures", "KnowledgeGraph", "LoadReport", "load_kg"]


def load_kg(source, **kwargs) -> KnowledgeGraph:
    """Load a knowledge graph from a PyKEEN dataset name/object or a folder (format detected)."""
    from imf_kg.data.loaders import load_kg as _load

    return _load(source, **kwargs)
