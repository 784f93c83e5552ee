"""Loaders: PyKEEN datasets and benchmark folders -> :class:`KnowledgeGraph`.

``load_kg`` takes a bundled PyKEEN dataset name (``nations``, ``umls``, ``kinships``: shipped inside the
package, so nothing is downloaded), a PyKEEN ``Dataset`` or ``TriplesFactory`` object, or a folder in one of
the layouts of :mod:`imf_kg.data.formats`. Valid/test triples whose entity or relation never occurs in
train are counted, then dropped (``unseen="drop"``), refused (``"error"``) or kept (``"keep"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imf_kg.data.formats import FORMATS, LAYOUT_HELP, parse_folder
from imf_kg.data.kg import SPLITS, KnowledgeGraph, LoadReport
from imf_kg.data.side_data import attach_features, attach_images, attach_text
from imf_kg.errors import DataFormatError, ToolkitError

PYKEEN_BUILTIN = ("nations", "umls", "kinships")
UNSEEN_POLICIES = ("drop", "error", "keep")
# side files picked up from a dataset folder: entity text, and the IMF reference feature pickles
AUTO_TEXT_FILES = ("entity_text.tsv", "wordnet-mlj12-definitions.txt")
AUTO_FEATURE_FILES = {"image": "img_features.pkl", "text": "text_features.pkl"}


def load_pykeen(dataset, unseen: str = "drop") -> KnowledgeGraph:
    """Load a PyKEEN ``Dataset`` (or a bundled dataset by name) keeping PyKEEN's ids and split.

    A bare ``TriplesFactory`` becomes the train split (valid and test empty); a tuple of three factories
    sharing one id map is (train, valid, test).
    """
    import pykeen.datasets
    from pykeen.triples import CoreTriplesFactory

    if isinstance(dataset, str):
        if dataset.lower() not in PYKEEN_BUILTIN:
            raise DataFormatError(dataset, None, "a PyKEEN dataset that would be downloaded", f"one of {PYKEEN_BUILTIN}")
        dataset = pykeen.datasets.get_dataset(dataset=dataset.lower())
    report = LoadReport()
    if isinstance(dataset, CoreTriplesFactory):
        factories = (dataset, None, None)
        name = "triples"
        report.notes.append("a TriplesFactory has no split: all its triples are train")
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 3:
        factories = tuple(dataset)
        name = "triples"
    elif hasattr(dataset, "training"):
        factories = (dataset.training, dataset.validation, dataset.testing)
        name = getattr(dataset, "get_normalized_name", lambda: type(dataset).__name__.lower())()
    else:
        raise ToolkitError(
            f"cannot load a {type(dataset).__name__}: expected a dataset name, folder, PyKEEN Dataset or TriplesFactory"
        )
    training = factories[0]
    entity_names = _names_in_id_order(getattr(training, "entity_to_id", None), training.num_entities, "e")
    relation_names = _names_in_id_order(getattr(training, "relation_to_id", None), training.num_relations, "r")
    splits = {}
    for split, factory in zip(SPLITS, factories):
        triples = factory.mapped_triples.long() if factory is not None else torch.empty(0, 3, dtype=torch.long)
        splits[split] = triples.numpy().astype(np.int64).reshape(-1, 3)
    return build_kg(name, entity_names, relation_names, splits, unseen, report)


def _names_in_id_order(label_to_id, count: int, prefix: str) -> list[str]:
    if not label_to_id:  # a CoreTriplesFactory has ids only
        return [f"{prefix}{i}" for i in range(count)]
    names = [f"{prefix}{i}" for i in range(count)]
    for label, i in label_to_id.items():
        names[i] = label
    return names


def build_kg(
    name: str,
    entity_names: list[str],
    relation_names: list[str],
    splits: dict[str, np.ndarray],
    unseen: str = "drop",
    report: LoadReport | None = None,
) -> KnowledgeGraph:
    """A :class:`KnowledgeGraph` from ``(n, 3)`` int64 (head, relation, tail) arrays, noting in the report how
    many valid/test triples have an unseen entity and how many an unseen relation before ``unseen`` applies."""
    if unseen not in UNSEEN_POLICIES:
        raise ToolkitError(f"--unseen must be one of {', '.join(UNSEEN_POLICIES)}, not {unseen!r}")
    report = report or LoadReport()
    train = splits["train"]
    seen_entity = np.zeros(len(entity_names), dtype=bool)
    seen_entity[train[:, 0]] = True
    seen_entity[train[:, 2]] = True
    seen_relation = np.zeros(len(relation_names), dtype=bool)
    seen_relation[train[:, 1]] = True
    for split in ("valid", "test"):
        triples = splits[split]
        new_entity = int((~(seen_entity[triples[:, 0]] & seen_entity[triples[:, 2]])).sum())
        new_relation = int((~seen_relation[triples[:, 1]]).sum())
        if new_entity or new_relation:
            report.notes.append(
                f"{split}: {new_entity} triples with an entity and {new_relation} with a relation unseen in train"
            )
    return KnowledgeGraph.from_id_triples(
        name, entity_names, relation_names, {s: torch.from_numpy(splits[s]) for s in SPLITS}, unseen=unseen, report=report
    )


def load_folder(
    folder: str | Path, fmt: str | None = None, unseen: str = "drop", name: str | None = None, side_data: bool = True
) -> KnowledgeGraph:
    """Load a benchmark folder (layout ``fmt`` or detected); with ``side_data`` attach the entity text
    (``entity_text.tsv`` or WN18's definitions) and IMF feature pickles found in the folder."""
    folder = Path(folder)
    parsed = parse_folder(folder, fmt)
    report = LoadReport(notes=[f"read {folder} as the {parsed.format} layout"])
    kg = build_kg(name or folder.name, parsed.entity_names, parsed.relation_names, parsed.splits, unseen, report)
    if side_data:
        for text_file in AUTO_TEXT_FILES:
            if (folder / text_file).is_file():
                attach_text(kg, folder / text_file)
                break
        for modality, feature_file in AUTO_FEATURE_FILES.items():
            if (folder / feature_file).is_file():
                attach_features(kg, modality, folder / feature_file)
    return kg


def load_kg(
    source,
    fmt: str | None = None,
    unseen: str = "drop",
    name: str | None = None,
    side_data: bool = True,
    text: str | Path | None = None,
    features: dict[str, str | Path] | None = None,
    images: str | Path | None = None,
) -> KnowledgeGraph:
    """Load a knowledge graph from a bundled PyKEEN name, a PyKEEN object or a folder.

    Args:
        source: ``"nations"``/``"umls"``/``"kinships"``, a PyKEEN ``Dataset``/``TriplesFactory``, or a folder.
        fmt: folder layout, one of :data:`~imf_kg.data.formats.FORMATS`; ``None`` detects it.
        unseen: what to do with valid/test triples using entities/relations absent from train.
        name: dataset name for reports (default: the folder's or PyKEEN's name).
        side_data: attach text/feature files found in the folder.
        text, features, images: extra side data (a text file; modality -> feature file; an image folder).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if isinstance(source, str) and source.lower() in PYKEEN_BUILTIN and not path.is_dir():
            kg = load_pykeen(source.lower(), unseen=unseen)
        elif path.is_dir():
            kg = load_folder(path, fmt=fmt, unseen=unseen, name=name, side_data=side_data)
        else:
            raise DataFormatError(
                path, None, "neither a folder nor a bundled dataset",
                f"one of {', '.join(PYKEEN_BUILTIN)} or {LAYOUT_HELP}",
            )
    else:
        kg = load_pykeen(source, unseen=unseen)
    if name:
        kg.name = name
    if text is not None:
        attach_text(kg, text)
    for modality, path in (features or {}).items():
        attach_features(kg, modality, path)
    if images is not None:
        attach_images(kg, images)
    return kg


__all__ = ["FORMATS", "PYKEEN_BUILTIN", "build_kg", "load_folder", "load_kg", "load_pykeen"]
