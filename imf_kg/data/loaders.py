"""Loaders: PyKEEN datasets and folders in several layouts -> :class:`KnowledgeGraph`.

(Minimal version: PyKEEN datasets. Folder formats are added by the data layer.)
"""

from __future__ import annotations

from imf_kg.data.kg import KnowledgeGraph

PYKEEN_BUILTIN = ("nations", "umls", "kinships")


def load_pykeen(dataset, unseen: str = "drop") -> KnowledgeGraph:
    """Load a PyKEEN ``Dataset`` (or a bundled dataset by name) keeping PyKEEN's ids and split."""
    import pykeen.datasets

    if isinstance(dataset, str):
        dataset = pykeen.datasets.get_dataset(dataset=dataset)
    factory = dataset.training
    entity_names = [None] * factory.num_entities
    for label, i in factory.entity_to_id.items():
        entity_names[i] = label
    relation_names = [None] * factory.num_relations
    for label, i in factory.relation_to_id.items():
        relation_names[i] = label

    def hrt(tf):
        return tf.mapped_triples[:, [0, 1, 2]].long() if tf is not None else None

    return KnowledgeGraph.from_id_triples(
        name=getattr(dataset, "get_normalized_name", lambda: type(dataset).__name__.lower())(),
        entity_names=entity_names,
        relation_names=relation_names,
        splits={"train": hrt(dataset.training), "valid": hrt(dataset.validation), "test": hrt(dataset.testing)},
        unseen=unseen,
    )


def load_kg(source, unseen: str = "drop", **kwargs) -> KnowledgeGraph:
    if isinstance(source, str) and source.lower() in PYKEEN_BUILTIN:
        return load_pykeen(source.lower(), unseen=unseen)
    return load_pykeen(source, unseen=unseen)
