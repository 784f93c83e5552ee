"""The real benchmarks in ../shared/data load with exactly the counts of its README.

The README's counts are the raw files. Loading drops valid/test triples whose entity or relation is absent
from train (the default ``unseen="drop"``); those are asserted separately, so raw = kept + dropped.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import pytest

from imf_kg.data.describe import describe
from imf_kg.data.loaders import load_kg

pytestmark = pytest.mark.realdata

# folder: (layout, train, valid, test, entities, relations, dropped valid, dropped test)
EXPECTED = {
    "FB15k-237": ("tsv", 272_115, 17_535, 20_466, 14_541, 237, 9, 28),
    "WN18RR": ("tsv", 86_835, 3_034, 3_134, 40_943, 11, 210, 210),
    "WN18": ("wn18", 141_442, 5_000, 5_000, 40_943, 18, 0, 0),
    "DB15K": ("openke", 79_222, 9_904, 9_902, 12_842, 279, 4, 84),
}


@lru_cache(maxsize=None)
def cached_load(folder: Path, unseen: str = "drop", side_data: bool = True):
    """Each benchmark is parsed once per session (the tests only read the graphs)."""
    return load_kg(folder, unseen=unseen, side_data=side_data)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_match_the_readme(shared_data, name):
    layout, train, valid, test, entities, relations, dropped_valid, dropped_test = EXPECTED[name]
    kept = cached_load(shared_data / "kg" / name)
    assert kept.num_entities == entities and kept.num_relations == relations
    assert f"as the {layout} layout" in kept.report.notes[0]
    assert kept.report.dropped == {"valid": dropped_valid, "test": dropped_test}
    assert (len(kept.train), len(kept.valid), len(kept.test)) == (train, valid - dropped_valid, test - dropped_test)
    raw = cached_load(shared_data / "kg" / name, unseen="keep", side_data=False)
    assert (len(raw.train), len(raw.valid), len(raw.test)) == (train, valid, test)
    assert raw.report.unseen == {"valid": dropped_valid, "test": dropped_test}
    assert raw.num_entities == entities  # every entity keeps its id, even one seen only in valid/test


def test_fb15k237_parse_matches_a_plain_reading(shared_data):
    """The whole-file fast path gives exactly the rows a line-by-line reading gives, ids in first-appearance order."""
    folder = shared_data / "kg" / "FB15k-237"
    kg = cached_load(folder, unseen="keep", side_data=False)
    for split in ("train", "valid", "test"):
        with open(folder / f"{split}.txt", encoding="utf-8") as handle:
            rows = [tuple(line.rstrip("\r\n").split("\t")) for line in handle]
        loaded = kg.split(split).tolist()
        assert len(loaded) == len(rows)
        for (h, r, t), (head, relation, tail) in zip(loaded[::997], rows[::997]):
            assert (kg.entity_names[h], kg.relation_names[r], kg.entity_names[t]) == (head, relation, tail)
    with open(folder / "train.txt", encoding="utf-8") as handle:
        first = handle.readline().rstrip("\r\n").split("\t")
    assert kg.entity_names[:2] == [first[0], first[2]] and kg.relation_names[0] == first[1]


@pytest.mark.parametrize("name, lines_outside", [("FB15k-237", 410), ("WN18RR", 0), ("WN18", 0)])
def test_entity_text_covers_every_entity(shared_data, name, lines_outside):
    kg = cached_load(shared_data / "kg" / name)
    assert kg.entity_text is not None and all(kg.entity_text)
    assert describe(kg)["modalities"]["text"]["entities"] == kg.num_entities
    if lines_outside:  # FB15k-237's text file also covers FB15k's 410 extra entities
        assert any(f"{lines_outside} lines name entities absent" in note for note in kg.report.notes)
    sample = kg.entity_text[kg.entity_to_id["/m/016ywr" if name == "FB15k-237" else "14854262"]]
    expected = "Jeremy Irons -- Jeremy John Irons is an English actor." if name == "FB15k-237" else (
        "stool -- solid excretory product evacuated from the bowels"
    )
    assert sample == expected


def test_db15k_split_quality_is_reported(shared_data):
    """DB15K's valid split repeats triples and shares triples with train and test: described, not hidden."""
    summary = describe(cached_load(shared_data / "kg" / "DB15K", unseen="keep"))
    assert summary["duplicates"] == {"train": 0, "valid": 2423, "test": 0}
    assert summary["shared"] == {"train&valid": 6584, "train&test": 0, "valid&test": 824}
    assert summary["modalities"]["text"]["entities"] == 0


def test_fb15k237_loads_in_seconds(shared_data):
    start = time.process_time()  # CPU time: other processes on a shared machine do not count
    load_kg(shared_data / "kg" / "FB15k-237", side_data=False)
    # about 1 s of CPU; the bound catches a return to per-line parsing with torch.unique(dim=0), not noise
    assert time.process_time() - start < 6
