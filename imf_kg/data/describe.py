"""``describe(kg)``: what a loaded knowledge graph holds, as a JSON-ready dict and as text.

Reports sizes, duplicates within each split, triples shared between splits, valid/test triples with
entities or relations unseen in training (as counted by the loader before they were dropped), and how many
entities have each side modality.
"""

from __future__ import annotations

import torch

from imf_kg.data.kg import SPLITS, KnowledgeGraph


def _triple_keys(kg: KnowledgeGraph, triples: torch.Tensor) -> torch.Tensor:
    """``(n,)`` int64 key per triple, unique per (head, relation, tail)."""
    return (triples[:, 0] * max(kg.num_relations, 1) + triples[:, 1]) * max(kg.num_entities, 1) + triples[:, 2]


def _shared(kg: KnowledgeGraph, left: torch.Tensor, right: torch.Tensor) -> int:
    """Number of distinct triples present in both splits."""
    if not len(left) or not len(right):
        return 0
    return int(torch.isin(torch.unique(_triple_keys(kg, left)), _triple_keys(kg, right)).sum())


def describe(kg: KnowledgeGraph) -> dict:
    """A JSON-ready summary of ``kg``.

    Keys: ``name``, ``entities``, ``relations``, ``relations_with_inverse``, ``triples`` (split -> count
    after the unseen policy), ``duplicates`` (split -> rows repeating an earlier row of the same split),
    ``shared`` (``train&valid``, ``train&test``, ``valid&test`` distinct triples), ``unseen`` and ``dropped``
    (split -> valid/test triples with an entity or relation absent from train, and how many were removed),
    ``entities_without_train_triples``, ``modalities`` (``text``, ``features`` per modality with dim and
    coverage, ``images``) and ``notes`` (the loader's report lines).
    """
    train_entities = torch.zeros(kg.num_entities, dtype=torch.bool)
    train_entities[kg.train[:, 0]] = True
    train_entities[kg.train[:, 2]] = True
    text_coverage = sum(1 for text in kg.entity_text if text) if kg.entity_text is not None else 0
    images = kg.images or {}
    report = kg.report
    return {
        "name": kg.name,
        "entities": kg.num_entities,
        "relations": kg.num_relations,
        "relations_with_inverse": kg.num_relations_with_inverse,
        "triples": {split: len(kg.split(split)) for split in SPLITS},
        "duplicates": {split: int(report.duplicates.get(split, 0)) for split in SPLITS},
        "shared": {
            "train&valid": _shared(kg, kg.train, kg.valid),
            "train&test": _shared(kg, kg.train, kg.test),
            "valid&test": _shared(kg, kg.valid, kg.test),
        },
        "unseen": {split: int(report.unseen.get(split, 0)) for split in ("valid", "test")},
        "dropped": {split: int(report.dropped.get(split, 0)) for split in ("valid", "test")},
        "entities_without_train_triples": int((~train_entities).sum()),
        "modalities": {
            "text": {"entities": text_coverage},
            "features": {
                name: {"dim": features.dim, "entities": features.coverage, "source": features.source}
                for name, features in kg.features.items()
            },
            "images": {
                "entities": sum(1 for paths in images.values() if paths),
                "files": sum(len(paths) for paths in images.values()),
            },
        },
        "notes": list(report.notes),
    }


def render_description(summary: dict) -> str:
    """The text form of :func:`describe`'s dict, one fact per line."""
    entities = summary["entities"]

    def share(count: int) -> str:
        return f"{count} / {entities} entities ({100.0 * count / entities:.1f}%)" if entities else f"{count}"

    triples = summary["triples"]
    lines = [
        f"dataset    {summary['name']}",
        f"entities   {entities}",
        f"relations  {summary['relations']} ({summary['relations_with_inverse']} with inverses)",
        "triples    " + "  ".join(f"{split} {triples[split]}" for split in SPLITS),
        "duplicates " + "  ".join(f"{split} {summary['duplicates'][split]}" for split in SPLITS)
        + "  (repeated rows within a split)",
        "shared     " + "  ".join(f"{pair} {n}" for pair, n in summary["shared"].items())
        + "  (distinct triples in both splits)",
        "unseen     " + "  ".join(
            f"{split} {summary['unseen'][split]} ({summary['dropped'][split]} dropped)" for split in ("valid", "test")
        ) + "  (triples with an entity or relation absent from train)",
        f"entities without a train triple  {summary['entities_without_train_triples']}",
        f"text       {share(summary['modalities']['text']['entities'])}",
    ]
    for name, info in summary["modalities"]["features"].items():
        lines.append(f"features   {name}: dim {info['dim']}, {share(info['entities'])}  from {info['source']}")
    image_info = summary["modalities"]["images"]
    lines.append(f"images     {share(image_info['entities'])}, {image_info['files']} files")
    lines.extend(f"note       {note}" for note in summary["notes"])
    return "\n".join(lines)
