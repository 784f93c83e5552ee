"""Malformed input stops the load with one line naming the file, the 1-based line, what was found and expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imf_kg.data.kg import KnowledgeGraph
from imf_kg.data.loaders import load_kg
from imf_kg.data.side_data import attach_features, attach_images, attach_text
from imf_kg.errors import DataFormatError, ToolkitError

REPO = Path(__file__).resolve().parents[1]
GOOD_TSV = "a\tr\tb\nb\tr\tc\n"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def tsv_folder(root: Path, train=GOOD_TSV, valid=GOOD_TSV, test=GOOD_TSV) -> Path:
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        if text is not None:
            write(root / f"{split}.txt", text)
    return root


def openke_folder(root: Path, train="2\n0 1 0\n1 2 0\n", entities="3\na 0\nb 1\nc 2\n", relations="r 0\n") -> Path:
    write(root / "entity2id.txt", entities)
    write(root / "relation2id.txt", relations)
    write(root / "train2id.txt", train)
    write(root / "valid2id.txt", "1\n0 1 0\n")
    write(root / "test2id.txt", "1\n1 2 0\n")
    return root


def imf_folder(root: Path, train="a r b .\nb r c .\n") -> Path:
    write(root / "entity2id.txt", "a 0\nb 1\nc 2\n")
    write(root / "relation2id.txt", "r 0\n")
    write(root / "train.txt", train)
    write(root / "val.txt", "a r b\n")
    write(root / "test.txt", "b r c\n")
    return root


def expect_error(call, path: Path, line: int | None, *fragments: str) -> DataFormatError:
    """The call raises a one-line DataFormatError naming ``path`` (and ``path:line``) and the fragments."""
    with pytest.raises(DataFormatError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert info.value.path == str(path)
    if line is not None:
        assert info.value.line == line
        assert message.startswith(f"{path}:{line}: found ")
    assert "expected" in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


CASES = {
    # name: (folder builder, file with the error, line, fragments of the message)
    "wrong column count": (lambda d: tsv_folder(d, train="a\tr\tb\nb\tr\n"), "train.txt", 2, ("2 tab-separated fields",)),
    "too many columns": (lambda d: tsv_folder(d, test="a\tr\tb\tx\n"), "test.txt", 1, ("4 tab-separated fields",)),
    "spaces instead of tabs": (lambda d: tsv_folder(d, valid="a\tr\tb\nb r c\n"), "valid.txt", 2, ("mixed separators",)),
    "empty field": (lambda d: tsv_folder(d, train="a\tr\tb\n\n\nb\t\tc\n"), "train.txt", 4, ("empty field",)),
    "empty file": (lambda d: tsv_folder(d, valid=""), "valid.txt", 1, ("empty file",)),
    "blank-only file": (lambda d: tsv_folder(d, test="\n  \n"), "test.txt", 1, ("empty file",)),
    "non-UTF-8 bytes": (lambda d: tsv_folder(d, train=b"a\tr\tb\nb\tr\tc\n\xffx\tr\ta\n"), "train.txt", 3, ("0xff", "UTF-8")),
    "missing split file": (lambda d: tsv_folder(d, test=None), "test.txt", None, ("no such file", "test split")),
    "non-integer id": (lambda d: openke_folder(d, train="2\n0 1 0\n1 x 0\n"), "train2id.txt", 3, ("non-integer id 'x'",)),
    "id out of range": (lambda d: openke_folder(d, train="2\n0 1 0\n1 7 0\n"), "train2id.txt", 3, ("tail entity id 7 out of range",)),
    "negative id": (lambda d: openke_folder(d, train="2\n0 1 0\n1 -1 0\n"), "train2id.txt", 3, ("id -1 out of range",)),
    "relation id out of range": (lambda d: openke_folder(d, train="2\n0 1 0\n1 2 1\n"), "train2id.txt", 3, ("relation id 1",)),
    "count line mismatch": (lambda d: openke_folder(d, train="3\n0 1 0\n1 2 0\n"), "train2id.txt", 1, ("count 3 but 2 rows",)),
    "missing count line": (lambda d: openke_folder(d, train="0 1 0\n1 2 0\n"), "train2id.txt", 1, ("count line",)),
    "openke mixed separators": (lambda d: openke_folder(d, train="2\n0 1 0\n1\t2\t0\n"), "train2id.txt", 3, ("mixed separators",)),
    "entity id twice": (lambda d: openke_folder(d, entities="a 0\nb 1\nc 1\n"), "entity2id.txt", 3, ("id 1 again (first on line 2)",)),
    "entity id gap": (lambda d: openke_folder(d, entities="a 0\nb 1\nc 5\n"), "entity2id.txt", 3, ("id 5 out of range",)),
    "entity name twice": (lambda d: openke_folder(d, entities="a 0\nb 1\na 2\n"), "entity2id.txt", 3, ("'a' again",)),
    "id file count mismatch": (lambda d: openke_folder(d, entities="4\na 0\nb 1\nc 2\n"), "entity2id.txt", 1, ("count 4 but 3 rows",)),
    "id file non-integer id": (lambda d: openke_folder(d, relations="r zero\n"), "relation2id.txt", 1, ("non-integer id 'zero'",)),
    "id file one field": (lambda d: openke_folder(d, relations="0\nr\n"), "relation2id.txt", 2, ("1 field",)),
    "imf unknown entity": (lambda d: imf_folder(d, train="a r b .\nb r zz .\n"), "train.txt", 2, ("entity 'zz' absent from entity2id.txt",)),
    "imf wrong column count": (lambda d: imf_folder(d, train="a r b c d\n"), "train.txt", 1, ("5 whitespace-separated fields",)),
    "imf mixed separators": (lambda d: imf_folder(d, train="a r b\nb\tr\tc\n"), "train.txt", 2, ("mixed separators",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_folder_names_file_and_line(tmp_path, case):
    build, file_name, line, fragments = CASES[case]
    folder = build(tmp_path)
    expect_error(lambda: load_kg(folder), folder / file_name, line, *fragments)


def test_unknown_layout_and_unknown_format(tmp_path):
    write(tmp_path / "triples.csv", "a,r,b\n")
    expect_error(lambda: load_kg(tmp_path), tmp_path, None, "no known layout", "triples.csv")
    tsv_folder(tmp_path)
    expect_error(lambda: load_kg(tmp_path, fmt="csv"), tmp_path, None, "format 'csv'", "tsv, wn18, openke, imf")


def test_missing_source(tmp_path):
    expect_error(lambda: load_kg(tmp_path / "absent"), tmp_path / "absent", None, "neither a folder nor a bundled dataset")


@pytest.fixture
def small_kg() -> KnowledgeGraph:
    return KnowledgeGraph.from_labeled_triples("small", {"train": [("a", "r", "b"), ("b", "r", "c")]})


@pytest.mark.parametrize(
    "matrix, fragments",
    [
        (np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 2.0]]), ("nan in row 1",)),
        (np.array([[0.0, 1.0], [1.0, 1.0], [2.0, np.inf]]), ("inf in row 2",)),
        (np.ones((2, 4)), ("2 rows", "3 rows, one per entity")),
        (np.ones((3, 2, 2)), ("shape (3, 2, 2)", "2-D")),
        (np.ones(3), ("shape (3,)",)),
        (np.ones((3, 0)), ("shape (3, 0)",)),
        (np.array([["x"], ["y"], ["z"]]), ("dtype <U1", "numeric")),
        (np.full((3, 1), 1e300), ("float32 range",)),
    ],
)
def test_bad_feature_matrices(tmp_path, small_kg, matrix, fragments):
    path = tmp_path / "features.npy"
    np.save(path, matrix)
    expect_error(lambda: attach_features(small_kg, "image", path), path, None, *fragments)
    assert "image" not in small_kg.features


def test_bad_feature_files(tmp_path, small_kg):
    write(tmp_path / "broken.npy", b"not an npy file")
    expect_error(lambda: attach_features(small_kg, "x", tmp_path / "broken.npy"), tmp_path / "broken.npy", None, "ValueError")
    write(tmp_path / "broken.pkl", b"\x80\x04garbage")
    expect_error(lambda: attach_features(small_kg, "x", tmp_path / "broken.pkl"), tmp_path / "broken.pkl", None, "readable .pkl")
    torch.save({"values": torch.ones(3, 2)}, tmp_path / "dict.pt")
    expect_error(lambda: attach_features(small_kg, "x", tmp_path / "dict.pt"), tmp_path / "dict.pt", None, "a dict")
    write(tmp_path / "features.csv", "1,2\n")
    expect_error(lambda: attach_features(small_kg, "x", tmp_path / "features.csv"), tmp_path / "features.csv", None, "suffix '.csv'")
    np.save(tmp_path / "ok.npy", np.ones((2, 2)))
    write(tmp_path / "ids.txt", "a\n\nb\na\n")
    expect_error(
        lambda: attach_features(small_kg, "x", tmp_path / "ok.npy", ids_path=tmp_path / "ids.txt"),
        tmp_path / "ids.txt", 4, "'a' again (first on line 1)",
    )
    write(tmp_path / "ids.txt", "a\nb\nc\n")
    expect_error(
        lambda: attach_features(small_kg, "x", tmp_path / "ok.npy", ids_path=tmp_path / "ids.txt"),
        tmp_path / "ok.npy", None, "2 rows", "3 rows, one per name",
    )


def test_bad_text_files_and_image_folder(tmp_path, small_kg):
    path = write(tmp_path / "entity_text.tsv", "a\tAlpha\nb Beta\n")
    expect_error(lambda: attach_text(small_kg, path), path, 2, "1 tab-separated fields", "entity<TAB>text")
    path = write(tmp_path / "entity_text.tsv", "a\tAlpha\nb\tBeta\na\tagain\n")
    expect_error(lambda: attach_text(small_kg, path), path, 3, "'a' again")
    path = write(tmp_path / "defs.txt", "001\t__stool_NN_2\tgloss\n002\t__x_NN_1\n")
    expect_error(lambda: attach_text(small_kg, path), path, 2, "offset<TAB>__lemma_POS_n<TAB>gloss")
    expect_error(lambda: attach_images(small_kg, tmp_path / "none"), tmp_path / "none", None, "no such folder")
    assert small_kg.entity_text is None  # nothing half-attached


def test_folder_side_file_errors_stop_the_load(tmp_path):
    folder = tsv_folder(tmp_path)
    write(folder / "entity_text.tsv", "a\tAlpha\n\xff\n".encode("latin-1"))
    expect_error(lambda: load_kg(folder), folder / "entity_text.tsv", 2, "0xff")


def test_every_error_is_a_toolkit_error():
    assert issubclass(DataFormatError, ToolkitError)


def test_cli_bad_folder_exits_2_without_traceback(tmp_path):
    folder = tsv_folder(tmp_path, train="a\tr\tb\nb r c\n")
    result = subprocess.run(
        [sys.executable, "-m", "imf_kg", "data", "describe", str(folder)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{folder / 'train.txt'}:2:" in lines[0] and "mixed separators" in lines[0]
    assert result.stdout == ""
