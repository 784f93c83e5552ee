"""Folder layouts of link-prediction benchmarks -> id maps and integer (head, relation, tail) splits.

Layouts (``detect_format`` picks one from the file names, or the caller names it):

- ``tsv``: labelled ``train.txt``, ``valid.txt``, ``test.txt``, one ``head<TAB>relation<TAB>tail`` per line
  (FB15k-237, WN18RR as released with ConvE). Names may contain spaces, not tabs.
- ``wn18``: the same rows in ``wordnet-mlj12-{train,valid,test}.txt`` (Bordes et al. 2013).
- ``openke``: ``train2id.txt``, ``valid2id.txt``, ``test2id.txt``: a count line, then ``head tail relation``
  ids (tail before relation); ``entity2id.txt``, ``relation2id.txt`` name the ids (DB15K).
- ``imf``: the IMF reference layout: ``entity2id.txt``, ``relation2id.txt`` and labelled ``train.txt``,
  ``val.txt``, ``test.txt`` separated by spaces, with an optional 4th token ``.``.

Labelled layouts number entities and relations in order of first appearance (train, then valid, test;
head before tail), as :meth:`KnowledgeGraph.from_labeled_triples` does; id layouts keep the file's ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imf_kg.data.kg import SPLITS
from imf_kg.data.parsing import (
    check_count,
    check_id_range,
    numbered,
    parse_id_rows,
    read_id_file,
    read_lines,
    read_text,
    split_count_line,
    split_space_fields,
    split_tab_fields,
)
from imf_kg.errors import DataFormatError

TSV_LAYOUT = "head<TAB>relation<TAB>tail"
OPENKE_LAYOUT = "'head tail relation' ids (tail before relation)"
IMF_LAYOUT = "'head relation tail' names separated by spaces, optionally ending in ' .'"

# split -> candidate file names, first existing one wins
SPLIT_FILES = {
    "tsv": {"train": ("train.txt",), "valid": ("valid.txt", "val.txt"), "test": ("test.txt",)},
    "wn18": {s: (f"wordnet-mlj12-{s}.txt",) for s in SPLITS},
    "openke": {"train": ("train2id.txt",), "valid": ("valid2id.txt", "val2id.txt"), "test": ("test2id.txt",)},
    "imf": {"train": ("train.txt",), "valid": ("val.txt", "valid.txt"), "test": ("test.txt",)},
}
FORMATS = tuple(SPLIT_FILES)
LAYOUT_HELP = (
    "a folder in one of the layouts tsv (train.txt valid.txt test.txt), wn18 (wordnet-mlj12-train.txt ...), "
    "openke (train2id.txt entity2id.txt ...), imf (entity2id.txt relation2id.txt train.txt val.txt test.txt)"
)


@dataclass
class ParsedGraph:
    """What a folder parser returns: names in id order and ``(n, 3)`` int64 (head, relation, tail) arrays."""

    format: str
    entity_names: list[str]
    relation_names: list[str]
    splits: dict[str, np.ndarray]


def detect_format(folder: str | Path) -> str:
    """The layout of ``folder``, from its file names (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(folder, None, "no such folder", LAYOUT_HELP)
    names = {p.name for p in folder.iterdir()}
    if "train2id.txt" in names:
        return "openke"
    if "wordnet-mlj12-train.txt" in names:
        return "wn18"
    if {"entity2id.txt", "train.txt"} <= names:
        return "imf"
    if "train.txt" in names:
        return "tsv"
    listed = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "")
    raise DataFormatError(folder, None, f"files [{listed}] in no known layout", LAYOUT_HELP)


def split_paths(folder: Path, fmt: str) -> dict[str, Path]:
    """The train/valid/test files of ``fmt`` in ``folder``; a missing one is an error naming it."""
    paths = {}
    for split, candidates in SPLIT_FILES[fmt].items():
        found = [folder / name for name in candidates if (folder / name).is_file()]
        if not found:
            raise DataFormatError(
                folder / candidates[0], None, "no such file", f"the {split} split of the {fmt} layout"
            )
        paths[split] = found[0]
    return paths


def parse_folder(folder: str | Path, fmt: str | None = None) -> ParsedGraph:
    """Parse a benchmark folder; ``fmt`` is one of :data:`FORMATS` or ``None`` to detect it."""
    folder = Path(folder)
    if fmt is None:
        fmt = detect_format(folder)
    elif fmt not in FORMATS:
        raise DataFormatError(folder, None, f"format {fmt!r}", f"one of {', '.join(FORMATS)}")
    elif not folder.is_dir():
        raise DataFormatError(folder, None, "no such folder", LAYOUT_HELP)
    paths = split_paths(folder, fmt)
    if fmt in ("tsv", "wn18"):
        rows = {split: read_tab_triples(path) for split, path in paths.items()}
        entity_names, relation_names, splits = index_labelled(rows)
    elif fmt == "openke":
        entity_names = read_id_file(folder / "entity2id.txt", "entity")
        relation_names = read_id_file(folder / "relation2id.txt", "relation")
        splits = {
            split: read_openke_triples(path, len(entity_names), len(relation_names))
            for split, path in paths.items()
        }
    else:
        entity_names = read_id_file(folder / "entity2id.txt", "entity")
        relation_names = read_id_file(folder / "relation2id.txt", "relation")
        entity_ids = {name: i for i, name in enumerate(entity_names)}
        relation_ids = {name: i for i, name in enumerate(relation_names)}
        splits = {split: read_imf_triples(path, entity_ids, relation_ids) for split, path in paths.items()}
    return ParsedGraph(fmt, entity_names, relation_names, splits)


# ------------------------------------------------------------------------------------------- labelled
# ASCII bytes that str.strip() removes: a field must not start or end with one
_WHITESPACE_BYTES = np.zeros(256, dtype=bool)
_WHITESPACE_BYTES[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


def _is_clean_tsv(data: bytes) -> bool:
    """True when ``data`` is ASCII lines of exactly three non-empty, unpadded tab-separated fields, no blank
    line: then splitting the whole text at once gives what the line-by-line parser would (checked in numpy)."""
    if not data or not data.isascii():
        return False
    array = np.frombuffer(data if data.endswith(b"\n") else data + b"\n", dtype=np.uint8)
    separators = np.flatnonzero((array == 9) | (array == 10))
    if len(separators) % 3:
        return False
    kinds = array[separators]
    if not ((kinds[0::3] == 9).all() and (kinds[1::3] == 9).all() and (kinds[2::3] == 10).all()):
        return False
    starts = np.concatenate(([0], separators[:-1] + 1))
    if (separators <= starts).any():  # an empty field or a blank line
        return False
    return not (_WHITESPACE_BYTES[array[starts]].any() or _WHITESPACE_BYTES[array[separators - 1]].any())


def read_tab_triples(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Labelled tab-separated triples: ``(heads, relations, tails)`` lists of names."""
    data = path.read_bytes().replace(b"\r\n", b"\n") if path.is_file() else b""
    if _is_clean_tsv(data):
        flat = data.decode("ascii").replace("\n", "\t").split("\t")
        if flat[-1] == "":  # after the final newline
            flat.pop()
        return flat[0::3], flat[1::3], flat[2::3]
    text = read_text(path, "triples")
    lines = [line.strip() for line in text.split("\n")]
    if not any(lines):
        raise DataFormatError(path, 1, "an empty file", f"at least one triple: {TSV_LAYOUT}")
    numbers, data = numbered(lines)
    rows = split_tab_fields(path, data, numbers, 3, TSV_LAYOUT)
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def index_labelled(
    columns: dict[str, tuple[list[str], list[str], list[str]]]
) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """Number labelled ``(heads, relations, tails)`` columns: ids in order of first appearance, train first,
    head before tail. Returns entity names, relation names and ``(n, 3)`` int64 id arrays per split."""
    entity_order: list[str] = []
    relation_order: list[str] = []
    for split in SPLITS:
        heads, relations, tails = columns.get(split, ((), (), ()))
        interleaved = [None] * (2 * len(heads))
        interleaved[0::2] = heads
        interleaved[1::2] = tails
        entity_order.extend(interleaved)
        relation_order.extend(relations)
    # dict.fromkeys keeps first appearances in order and runs in C
    entity_ids = {name: i for i, name in enumerate(dict.fromkeys(entity_order))}
    relation_ids = {name: i for i, name in enumerate(dict.fromkeys(relation_order))}
    splits = {}
    for split in SPLITS:
        heads, relations, tails = columns.get(split, ((), (), ()))
        ids = np.empty((len(heads), 3), dtype=np.int64)
        for k, (column, table) in enumerate(((heads, entity_ids), (relations, relation_ids), (tails, entity_ids))):
            ids[:, k] = np.fromiter(map(table.__getitem__, column), dtype=np.int64, count=len(column))
        splits[split] = ids
    return list(entity_ids), list(relation_ids), splits


# ------------------------------------------------------------------------------------------------ openke
def read_openke_triples(path: Path, num_entities: int, num_relations: int) -> np.ndarray:
    """``(n, 3)`` (head, relation, tail) ids of an OpenKE ``*2id.txt`` file (rows are head tail relation)."""
    lines = read_lines(path, "triples")
    count, start = split_count_line(path, lines, required=True)
    numbers, data = numbered(lines[start:])
    numbers = [n + start for n in numbers]
    check_count(path, count, start, len(data))
    if not data:
        raise DataFormatError(path, start, "a count line and no triples", f"at least one row: {OPENKE_LAYOUT}")
    ids = parse_id_rows(path, data, numbers, 3, OPENKE_LAYOUT)
    check_id_range(path, ids, numbers, 0, num_entities, "head entity")
    check_id_range(path, ids, numbers, 1, num_entities, "tail entity")
    check_id_range(path, ids, numbers, 2, num_relations, "relation")
    return ids[:, [0, 2, 1]].copy()


# --------------------------------------------------------------------------------------------------- imf
def read_imf_triples(path: Path, entity_ids: dict[str, int], relation_ids: dict[str, int]) -> np.ndarray:
    """``(n, 3)`` ids of an IMF ``train.txt``-style file of names; names must be in the id files."""
    lines = read_lines(path, "triples")
    numbers, data = numbered(lines)
    rows = split_space_fields(path, data, numbers, 3, IMF_LAYOUT, optional_dot=True)
    try:
        return np.array(
            [(entity_ids[h], relation_ids[r], entity_ids[t]) for h, r, t in rows], dtype=np.int64
        ).reshape(-1, 3)
    except KeyError:
        pass  # find the first unknown name, with its line, for the error
    for (head, relation, tail), number in zip(rows, numbers):
        for name, table, what in ((head, entity_ids, "entity"), (relation, relation_ids, "relation"), (tail, entity_ids, "entity")):
            if name not in table:
                raise DataFormatError(
                    path, number, f"{what} {name!r} absent from {what}2id.txt", f"{what} names listed in {what}2id.txt"
                )
    raise AssertionError("unreachable: a KeyError implies an unknown name")
