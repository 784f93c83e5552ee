"""Hostile input for the node-classification loaders: the HGNN-IMA release layout (node_tasks/release.py) and
the IMDB CSV (node_tasks/imdb.py), then one damaged input per way for every loader (DAMAGED_INPUTS), each
required to load exactly right or end in a one-line ToolkitError. Split from test_hypothesis_loaders_extra.py.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from test_hypothesis_loaders_extra import FEW, image_bytes, one_line

from imf_kg.errors import DataFormatError, ToolkitError


# ---------------------------------------------------------------------- node classification: release
def write_release(folder: Path, seed: int = 0) -> dict:
    """A small, valid HGNN-IMA IMDB release folder (6 movies, 3 directors, 4 actors); returns its arrays."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    counts = (6, 3, 4)
    text = [rng.normal(size=(n, 5)).astype(np.float32) for n in counts]
    text[0][1] = 0.0  # movie 1 lacks text
    sp.save_npz(folder / "features_0.npz", sp.csr_matrix(text[0]))
    for i in (1, 2):
        np.savez(folder / f"features_{i}.npz", feature=text[i])
    image = rng.normal(size=(6, 4)).astype(np.float32)
    np.savez(folder / "img_feature_20_6_25_199.npz", feature=image)
    labels = np.arange(6) % 3
    np.save(folder / "labels.npy", labels)
    np.savez(folder / "train_val_test_idx1.npz", train_idx=np.array([0, 1, 2]), val_idx=np.array([3]),
             test_idx=np.array([4, 5]))
    np.save(folder / "rdf.npy", BASE_RDF.astype(np.int64))
    return {"text": text, "image": image, "labels": labels}


RELEASE_FILES = ["features_0.npz", "features_1.npz", "features_2.npz", "img_feature_20_6_25_199.npz",
                 "labels.npy", "train_val_test_idx1.npz", "rdf.npy"]
BASE_RDF = np.array([(m, 6 + m % 3, 0) for m in range(6)] + [(m, 9 + m % 4, 2) for m in range(6)])  # write_release's
DISJOINT = (("train_idx", "val_idx"), ("train_idx", "test_idx"), ("val_idx", "test_idx"))


@st.composite
def release_changes(draw):
    """``(description, {file: new content, a dict of arrays for .npz, None to delete}, valid)``: one change to
    write_release's folder (random bytes, non-integer and NaN values: in DAMAGED_INPUTS). Ids in rdf: movies 0..5, directors 6..8 (relation 0), actors 9..12 (relation 2)."""
    kind = draw(st.sampled_from(["none", "labels", "split", "rdf row", "rdf ignored", "image rows", "feature shape",
                                 "inf feature", "missing file", "missing split array"]))
    if kind == "labels":
        labels = np.array(draw(st.lists(st.integers(-2, 4), min_size=5, max_size=7)))
        return kind, {"labels.npy": labels}, len(labels) == 6 and labels.min() >= 0 and labels.max() < 3
    if kind == "split":
        parts = {name: np.array(draw(st.lists(st.integers(-1, 6), max_size=3)), dtype=np.int64)
                 for name in ("train_idx", "val_idx", "test_idx")}
        flat = np.concatenate(list(parts.values()))
        valid = (len(parts["train_idx"]) > 0 and bool(((flat >= 0) & (flat < 6)).all())
                 and not any(set(parts[a]) & set(parts[b]) for a, b in DISJOINT))
        return kind, {"train_val_test_idx1.npz": parts}, valid
    if kind == "rdf row":
        row = (draw(st.integers(-1, 14)), draw(st.integers(-1, 14)), draw(st.sampled_from([0, 2])))
        valid = 0 <= row[0] < 6 and ((6 <= row[1] < 9) if row[2] == 0 else (9 <= row[1] < 13))
        return f"rdf row {row}", {"rdf.npy": np.vstack([BASE_RDF, [row]])}, valid
    if kind == "rdf ignored":  # relation ids the published loader ignores, even with ids out of range
        return kind, {"rdf.npy": np.vstack([BASE_RDF, [[0, 99, 1], [5, -3, 3]]])}, True
    if kind == "image rows":
        return kind, {"img_feature_20_6_25_199.npz": {"feature": np.ones((draw(st.sampled_from([0, 5, 7])), 4))}}, False
    if kind == "feature shape":  # 1-D, 3-D, or a director count that moves the actor ids off the rdf rows
        shape = draw(st.sampled_from([(3,), (3, 5, 1), (2, 5), (4, 5)]))
        return f"director features {shape}", {"features_1.npz": {"feature": np.ones(shape)}}, False
    if kind == "inf feature":
        image = np.ones((6, 4))
        image[2, 1] = np.inf
        return kind, {"img_feature_20_6_25_199.npz": {"feature": image}}, False
    if kind == "missing file":
        return kind, {draw(st.sampled_from(RELEASE_FILES)): None}, False
    if kind == "missing split array":
        return kind, {"train_val_test_idx1.npz": {"train_idx": [0], "val_idx": [1]}}, False
    return kind, {}, True


def apply_release_change(folder: Path, change: dict) -> None:
    for name, content in change.items():
        if content is None:
            (folder / name).unlink()
        elif name.endswith(".npz"):
            np.savez(folder / name, **content)
        else:
            np.save(folder / name, content)


@pytest.fixture(scope="module")
def release_folder():
    root = Path(tempfile.mkdtemp(prefix="imf-kg-release-"))
    arrays = write_release(root)
    yield root, arrays
    shutil.rmtree(root, ignore_errors=True)


@FEW
@given(change=release_changes())
def test_release_layout_changes_load_exactly_or_raise(release_folder, change):
    from node_tasks.data import load_dataset

    base, arrays = release_folder
    description, files, valid = change
    with tempfile.TemporaryDirectory(prefix="imf-kg-rel-") as tmp:
        folder = Path(tmp) / "imdb"
        shutil.copytree(base, folder)
        apply_release_change(folder, files)
        written = {name: np.load(folder / name) for name in ("rdf.npy", "labels.npy") if (folder / name).is_file()}
        if (folder / "train_val_test_idx1.npz").is_file():
            with np.load(folder / "train_val_test_idx1.npz") as split:
                written.update({name: split[name] for name in split.files})
        try:
            data = load_dataset(str(folder), dataset="IMDB")
        except ToolkitError as err:
            event("refused")
            assert not valid, f"{description}: valid release refused: {err}"
            one_line(err)
            assert str(folder) in str(err), str(err)
            return
    event("loaded")
    assert valid, f"{description}: accepted"
    assert torch.equal(data["movie"].x_image, torch.from_numpy(arrays["image"]))
    assert torch.equal(data["director"].x_text, torch.from_numpy(arrays["text"][1]))
    assert data["movie"].mask_text.tolist() == [True, False, True, True, True, True]
    directed = data["movie", "directed_by", "director"].edge_index
    assert set(map(tuple, directed.t().tolist())) == {(int(m), int(d) - 6) for m, d, r in written["rdf.npy"] if r == 0}
    assert data["movie"].y.tolist() == written["labels.npy"].tolist()
    for name in ("train", "val", "test"):
        mask = data["movie"][f"{name}_mask"]
        assert mask.nonzero().squeeze(1).tolist() == sorted(set(written[f"{name}_idx"].tolist()))


def test_imdb_csv_without_the_columns_names_them(tmp_path):
    from node_tasks.imdb import read_movies

    (tmp_path / "movie_metadata.csv").write_text("movie_title,genres\nA,Action\n")
    with pytest.raises(DataFormatError) as caught:
        read_movies(tmp_path / "movie_metadata.csv")
    one_line(caught.value, tmp_path / "movie_metadata.csv")
    assert re.search(r"movie_metadata\.csv:1: found header without plot_keywords", str(caught.value))


# ------------------------------------------------------------------------- damaged inputs, one per way
def _png_bomb(path: Path) -> None:
    """A 2x2 PNG whose header (with a valid CRC) claims 60,000 x 60,000 pixels."""
    import struct
    import zlib

    data = bytearray(image_bytes("PNG", 2, 2, "L"))
    data[16:24] = struct.pack(">II", 60_000, 60_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def _csv(data: bytes):
    return lambda folder: (folder / "movie_metadata.csv").write_bytes(data)


# case -> (loader, change to a valid input). Loaders: "release" = node_tasks.data.load_hgnn_ima_release on
# write_release's folder, "imdb" = node_tasks.imdb.read_movies, "precomputed" = load_feature_matrix of the one
# file written, "image" = the image encoder's decoding of image.png.
DAMAGED_INPUTS = {
    # node_tasks/data.py: np.load's ValueError / EOFError escape for damaged files ...
    "release: random bytes in rdf.npy": ("release", lambda f: (f / "rdf.npy").write_bytes(b"\x93NUMPY garbage")),
    "release: empty labels.npy": ("release", lambda f: (f / "labels.npy").write_bytes(b"")),
    "release: random bytes in a feature .npz": ("release", lambda f: (f / "features_1.npz").write_bytes(b"PK\x03")),
    "release: random bytes in the split": ("release", lambda f: (f / "train_val_test_idx1.npz").write_bytes(b"?")),
    # ... labels.min() of no labels a ValueError, of string labels a UFuncTypeError; int() of strings a ValueError
    "release: no labels": ("release", lambda f: np.save(f / "labels.npy", np.array([], dtype=np.int64))),
    "release: string labels": ("release", lambda f: np.save(f / "labels.npy", np.array(list("abcabc")))),
    "release: string rdf": ("release", lambda f: np.save(f / "rdf.npy", np.array([["a", "b", "c"]]))),
    # ... non-integer values are truncated without a word: silently wrong labels, splits and edges
    "release: fractional labels": ("release", lambda f: np.save(f / "labels.npy", np.array([0.5, 1, 2, 0, 1, 2]))),
    "release: fractional split": ("release", lambda f: np.savez(f / "train_val_test_idx1.npz", train_idx=[0.5, 1.7],
                                                                 val_idx=[3], test_idx=[4])),
    "release: fractional rdf": ("release", lambda f: np.save(f / "rdf.npy", np.array([[0.4, 6.6, 0], [0, 9, 2]]))),
    # ... a NaN anywhere in a row makes the whole row "missing"; complex values lose their imaginary part
    "release: NaN feature": ("release", lambda f: np.savez(f / "img_feature_20_6_25_199.npz",
                                                           feature=np.where(np.eye(6, 4) > 0, np.nan, 1.0))),
    "release: complex feature": ("release", lambda f: np.savez(f / "img_feature_20_6_25_199.npz",
                                                               feature=np.ones((6, 4)) * 1j)),
    # node_tasks/imdb.py: pandas.read_csv's UnicodeDecodeError, EmptyDataError and ParserError escape
    "imdb: not UTF-8": ("imdb", _csv(b"\xff\xfemovie_title,genres\n")),
    "imdb: empty file": ("imdb", _csv(b"")),
    "imdb: unterminated quote": ("imdb", _csv(b'movie_title,genres\n"abc,1\n')),
    # imf_kg/encoders/precomputed.py: bfloat16 has no NumPy type and a non-tensor mask is not checked (TypeError);
    # complex values are cast to float32 keeping the real part, silently
    "precomputed: string mask": ("precomputed", lambda f: torch.save({"values": torch.ones(3, 2), "mask": "abc"},
                                                                     f / "m.pt")),
    "precomputed: complex .npy": ("precomputed", lambda f: np.save(f / "m.npy", np.ones((3, 2)) * (1 + 2j))),
    # imf_kg/encoders/image.py catches OSError only: PIL's DecompressionBombError (an Exception) escapes
    "image: decompression bomb": ("image", lambda f: _png_bomb(f / "image.png")),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_INPUTS))
def test_damaged_inputs_end_in_a_toolkit_error(case, tmp_path):
    from imf_kg.encoders.image import _ImageFiles, image_transform
    from imf_kg.encoders.precomputed import load_feature_matrix
    from node_tasks.data import load_hgnn_ima_release
    from node_tasks.imdb import read_movies

    loader, change = DAMAGED_INPUTS[case]
    if loader == "release":
        write_release(tmp_path)
    change(tmp_path)
    load = {"release": lambda: load_hgnn_ima_release(tmp_path, "IMDB"),
            "imdb": lambda: read_movies(tmp_path / "movie_metadata.csv"),
            "precomputed": lambda: load_feature_matrix(next(tmp_path.glob("m.*"))),
            "image": lambda: _ImageFiles([str(tmp_path / "image.png")], image_transform(16))[0]}[loader]
    escaped = None
    try:
        load()
    except ToolkitError as err:
        one_line(err)
        return
    except Exception as err:  # reported outside the handler, without the library's traceback
        escaped = f"{type(err).__name__} escaped: {str(err)[:100]}"
    pytest.fail(escaped or "loaded without an error", pytrace=False)
