"""Loader properties that tests/test_data_hypothesis.py does not cover, so that every loader meets hostile input.

Added here: the wn18 layout, relation id files, WN18 definition files, feature matrices of every dtype and
suffix (.npy .pt .pth .pkl .pickle), feature rows named by id files, the precomputed-feature loader
(imf_kg.encoders.precomputed, .npy .npz .pt .pkl), image folders and image bytes, over-long lines in every
line-based format (the node-classification loaders are in test_hypothesis_node_loaders.py). Each property
either compares with a reference reading of the same bytes (a file that loads must load exactly right) or
requires a one-line ToolkitError.

Damaged inputs that random generation reaches rarely (random bytes in each release file, fractional ids,
complex values, CSV tokenizer errors, a decompression bomb) are listed one per way in
test_hypothesis_node_loaders.py (DAMAGED_INPUTS), each required to end in a one-line ToolkitError.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_data_hypothesis import TRICKY, decode, folder_with, names_of, reference_id_file, reference_tsv, tsv_text

from imf_kg.data.kg import KnowledgeGraph
from imf_kg.data.loaders import load_kg
from imf_kg.data.side_data import attach_features, attach_images, attach_text
from imf_kg.errors import DataFormatError, ToolkitError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOOD_TSV = b"a\tr\tb\nb\tr\tc\n"


def one_line(err: Exception, path: Path | str | None = None) -> None:
    message = str(err)
    assert "\n" not in message and len(message) < 600, message
    if path is not None:
        assert str(path) in message, message


def small_kg() -> KnowledgeGraph:
    return KnowledgeGraph.from_labeled_triples("f", {"train": [("a", "r", "b"), ("b", "r", "c")]})


# ------------------------------------------------------------------------------------- folder layouts
@SETTINGS
@given(data=tsv_text, split=st.sampled_from(["train", "valid", "test"]))
def test_wn18_layout_bytes_load_exactly_or_raise(data, split):
    files = {f"wordnet-mlj12-{s}.txt": GOOD_TSV for s in ("train", "valid", "test")}
    files[f"wordnet-mlj12-{split}.txt"] = data
    expected = reference_tsv(data)
    with folder_with(files) as folder:
        try:
            kg = load_kg(folder, unseen="keep")
        except DataFormatError as err:
            assert expected is None, f"valid file refused: {err}"
            one_line(err, folder / f"wordnet-mlj12-{split}.txt")
            return
    assert expected is not None, "malformed file accepted"
    assert names_of(kg, kg.split(split)) == expected


@SETTINGS
@given(lines=st.lists(st.tuples(st.sampled_from(["r", "s", "t t", "é", "r"]), st.integers(-1, 3)), max_size=4),
       count=st.booleans(), separator=st.sampled_from([" ", "\t", "  "]),
       noise=st.one_of(st.none(), st.binary(max_size=8), st.sampled_from([b"\xff", b"\n\n", b"x"])))
def test_relation_id_files_load_exactly_or_raise(lines, count, separator, noise):
    data = ((f"{len(lines)}\n" if count else "") + "".join(f"{n}{separator}{i}\n" for n, i in lines)).encode()
    data += noise or b""
    files = {"entity2id.txt": b"e0 0\ne1 1\n", "relation2id.txt": data, "train.txt": b"e0 r e1\n",
             "val.txt": b"e1 r e0\n", "test.txt": b"e0 r e0 .\n"}
    expected = reference_id_file(data)
    with folder_with(files) as folder:
        try:
            kg = load_kg(folder, unseen="keep")
        except ToolkitError as err:
            one_line(err)
            # a valid id file can still fail when the triples name a relation it lacks
            assert expected is None or "r" not in expected, f"valid file refused: {err}"
            return
    assert expected is not None and "r" in expected, "malformed relation id file accepted"
    assert kg.relation_names == expected


@pytest.mark.parametrize("layout", ["tsv", "openke", "imf", "id file", "entity text"])
def test_very_long_lines_end_in_a_short_message(tmp_path, layout):
    long = "n" * 200_000
    files = {
        "tsv": {"train.txt": f"a\tr\tb\n{long} {long}\n", "valid.txt": "a\tr\tb\n", "test.txt": "a\tr\tb\n"},
        "openke": {"entity2id.txt": "a 0\nb 1\n", "relation2id.txt": "r 0\n", "train2id.txt": f"1\n0 1 {long}\n",
                   "valid2id.txt": "1\n0 1 0\n", "test2id.txt": "1\n0 1 0\n"},
        "imf": {"entity2id.txt": "a 0\nb 1\n", "relation2id.txt": "r 0\n", "train.txt": f"a r b\na r b {long} x\n",
                "val.txt": "a r b\n", "test.txt": "a r b\n"},
        "id file": {"entity2id.txt": f"a 0\n{long}\n", "relation2id.txt": "r 0\n", "train.txt": "a r a\n",
                    "val.txt": "a r a\n", "test.txt": "a r a\n"},
        "entity text": {"train.txt": "a\tr\tb\n", "valid.txt": "a\tr\tb\n", "test.txt": "a\tr\tb\n",
                        "entity_text.tsv": f"a\tfine\n{long}\n"},
    }[layout]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ToolkitError) as caught:
        load_kg(tmp_path)
    one_line(caught.value)
    assert len(str(caught.value)) < 400 and ":2:" in str(caught.value)


# ---------------------------------------------------------------------------------- entity text files
def reference_entity_text(data: bytes) -> dict[str, str] | None:
    """The documented text-file rules: ``name<TAB>text`` lines, or WN18 definitions
    ``offset<TAB>__lemma_POS_n<TAB>gloss`` (recognised on the first line) rendered ``lemma -- gloss``."""
    try:
        text = decode(data)
    except UnicodeDecodeError:
        return None
    rows = [line.strip() for line in text.split("\n") if line.strip()]
    if not rows:
        return None
    first = rows[0].split("\t")
    definitions = len(first) == 3 and first[1].startswith("__")
    out: dict[str, str] = {}
    for line in rows:
        parts = line.split("\t", 2 if definitions else 1)
        if len(parts) != (3 if definitions else 2) or not parts[0].strip() or parts[0].strip() in out:
            return None
        if definitions:
            lemma = parts[1].strip().lstrip("_")
            pieces = lemma.rsplit("_", 2)
            if len(pieces) == 3 and pieces[2].isdigit():
                lemma = pieces[0]
            out[parts[0].strip()] = f"{lemma.replace('_', ' ')} -- {parts[2].strip()}"
        else:
            out[parts[0].strip()] = parts[1].strip()
    return out


definition_row = st.tuples(st.sampled_from(["0", "1", "7", "", " 1"]),
                           st.sampled_from(["__dog_NN_1", "__hot_dog_NN_12", "__a", "_x_", "__b_VB_x", "c", ""]),
                           st.lists(st.sampled_from(TRICKY[:6] + ["gloss", "é", "\t"]), max_size=5).map("".join))


well_formed_definitions = st.permutations(["0", "1", "7", "9"]).flatmap(lambda offsets: st.tuples(*[
    st.tuples(st.just(o), st.sampled_from(["__dog_NN_1", "__hot_dog_NN_12", "__a"]), st.sampled_from(["a gloss", "é"]))
    for o in offsets[:3]]).map(list))


@SETTINGS
@given(rows=st.one_of(st.lists(definition_row, max_size=5), well_formed_definitions),
       separator=st.sampled_from(["\t", "\t", "\t", " ", "\t\t"]),
       end=st.sampled_from(["\n", "\r\n"]), noise=st.one_of(st.none(), st.binary(max_size=6)))
def test_wn18_definition_files_attach_exactly_or_raise(rows, separator, end, noise):
    data = "".join(separator.join(r) + end for r in rows).encode("utf-8") + (noise or b"")
    kg = KnowledgeGraph.from_labeled_triples("w", {"train": [("0", "r", "1"), ("1", "r", "7")]})
    expected = reference_entity_text(data)
    with folder_with({"wordnet-mlj12-definitions.txt": data}) as folder:
        try:
            attach_text(kg, folder / "wordnet-mlj12-definitions.txt")
        except ToolkitError as err:
            event("refused")
            assert expected is None, f"valid file refused: {err}"
            one_line(err, folder / "wordnet-mlj12-definitions.txt")
            assert kg.entity_text is None
            return
    event("attached")
    assert expected is not None, "malformed definitions accepted"
    assert kg.entity_text == [expected.get(name) or None for name in kg.entity_names]


# ----------------------------------------------------------------------------------- feature matrices
NUMPY_DTYPES = ["float32", "float64", "float16", "int64", "int8", "uint8", "uint64", "bool", "complex64", "object",
                "V8", "<U3"]
TORCH_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool,
                torch.complex64]


def write_matrix(path: Path, source) -> None:
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, source, allow_pickle=True)
    elif suffix in (".pt", ".pth"):
        torch.save(source, path)
    else:
        path.write_bytes(pickle.dumps(source))


@st.composite
def feature_sources(draw):
    """``(suffix, object saved, expected float32 values or None when the file must be refused)``."""
    suffix = draw(st.sampled_from([".npy", ".pt", ".pth", ".pkl", ".pickle"]))
    rows = draw(st.sampled_from([3, 3, 3, 2]))
    base = np.random.default_rng(draw(st.integers(0, 99))).normal(size=(rows, 2)) * 3
    if suffix in (".pt", ".pth"):
        dtype = draw(st.sampled_from(TORCH_DTYPES))
        tensor = torch.from_numpy(base).to(dtype) if dtype != torch.bool else torch.from_numpy(base > 0)
        valid = rows == 3 and not dtype.is_complex
        return suffix, tensor, tensor.float() if valid else None
    dtype = np.dtype(draw(st.sampled_from(NUMPY_DTYPES)))
    if dtype.kind == "V":
        array = np.zeros(rows, dtype=[("a", "f4"), ("b", "f4")])
    elif dtype.kind in "bU":
        array = (base > 0).astype(dtype)
    else:
        array = (base if dtype.kind in "fc" else np.abs(base) * 10).astype(dtype)
    valid = rows == 3 and array.dtype.kind in "fiub"
    return suffix, array, torch.from_numpy(np.asarray(array, dtype=np.float32)) if valid else None


@SETTINGS
@given(case=feature_sources())
def test_feature_matrices_of_every_dtype_and_suffix_attach_exactly_or_raise(case):
    suffix, source, expected = case
    kg = small_kg()
    with folder_with({}) as folder:
        path = folder / f"features{suffix}"
        write_matrix(path, source)
        try:
            features = attach_features(kg, "m", path)
        except ToolkitError as err:
            event("refused")
            assert expected is None, f"valid matrix refused: {err}"
            one_line(err, path)
            assert "m" not in kg.features
            return
    event("attached")
    assert expected is not None, f"bad matrix accepted: {type(source).__name__} {getattr(source, 'dtype', '')}"
    assert features.values.dtype == torch.float32 and torch.equal(features.values, expected)
    assert bool(features.mask.all())


@SETTINGS
@given(names=st.lists(st.sampled_from(["a", "b", "c", "zz", "a b", "", "  ", "c "]), max_size=6),
       extra_rows=st.sampled_from([0, 0, 0, 1, -1]), end=st.sampled_from(["\n", "\r\n"]),
       noise=st.one_of(st.none(), st.sampled_from([b"\xff", b"\x00", b"a\tb"])))
def test_feature_rows_named_by_an_id_file_land_on_their_entities_or_raise(names, extra_rows, end, noise):
    data = "".join(n + end for n in names).encode() + (noise or b"")
    try:
        listed = [line.strip() for line in data.decode("utf-8").split("\n") if line.strip()]
    except UnicodeDecodeError:
        listed = None
    rows = max(len(listed or []) + extra_rows, 1)
    matrix = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2) + 1
    valid = bool(listed) and len(set(listed)) == len(listed) and rows == len(listed)
    kg = small_kg()
    with folder_with({"ids.txt": data}) as folder:
        np.save(folder / "f.npy", matrix)
        try:
            features = attach_features(kg, "m", folder / "f.npy", folder / "ids.txt")
        except ToolkitError as err:
            event("refused")
            assert not valid, f"valid id file refused: {err}"
            one_line(err)
            return
    event("attached")
    assert valid, "malformed id file accepted"
    expected = torch.zeros(3, 2)
    for row, name in enumerate(listed):
        if name in kg.entity_to_id:
            expected[kg.entity_to_id[name]] = torch.from_numpy(matrix[row])
    assert torch.equal(features.values, expected)
    assert features.mask.tolist() == [name in listed for name in kg.entity_names]


# ------------------------------------------------------------------------- precomputed feature loader
@st.composite
def precomputed_cases(draw):
    suffix = draw(st.sampled_from([".npy", ".npz", ".pt", ".pkl"]))
    # bfloat16 (no NumPy type) goes through the .pt path; complex is always refused
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "int32", "uint8", "bfloat16", "complex64"]))
    if dtype == "bfloat16":
        suffix = ".pt"
    shape = draw(st.sampled_from([(4, 3), (4, 3), (4, 1), (3, 3), (4,), (4, 3, 1), (0, 3)]))
    matrix = np.random.default_rng(draw(st.integers(0, 99))).normal(size=shape) * 4
    if matrix.ndim == 2 and len(matrix) > 1:
        matrix[1] = 0.0  # an all-zero row: missing
    poison = draw(st.sampled_from([None, None, np.nan, np.inf, 1e300]))
    if poison is not None and matrix.size:
        matrix.flat[-1] = poison
    if not dtype.startswith(("float", "bfloat", "complex")):
        matrix = np.abs(np.nan_to_num(matrix, posinf=9))
    if dtype == "bfloat16":  # saved as a bfloat16 tensor; the expected values are its float32 reading
        return suffix, torch.from_numpy(matrix).to(torch.bfloat16), *num_rows_dim(draw)
    matrix = matrix.astype(dtype)
    return suffix, matrix, *num_rows_dim(draw)


def num_rows_dim(draw) -> tuple:
    return draw(st.sampled_from([None, 4])), draw(st.sampled_from([None, 3]))


@SETTINGS
@given(case=precomputed_cases())
def test_precomputed_feature_files_load_exactly_or_raise(case):
    from imf_kg.encoders.precomputed import load_feature_matrix

    suffix, matrix, num_rows, dim = case
    saved = matrix
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.float().numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        as_float = matrix.real.astype(np.float32)
    valid = (not np.iscomplexobj(matrix) and matrix.ndim == 2 and bool(np.isfinite(as_float).all()) and num_rows in (None, matrix.shape[0])
             and dim in (None, matrix.shape[1]))
    with folder_with({}) as folder:
        path = folder / f"features{suffix}"
        if suffix == ".npz":
            np.savez(path, feature=matrix)
        else:
            write_matrix(path, saved if isinstance(saved, torch.Tensor) else
                         torch.from_numpy(matrix) if suffix == ".pt" else matrix)
        try:
            encoded = load_feature_matrix(path, num_rows=num_rows, dim=dim)
            values = encoded.values.clone()
        except ToolkitError as err:
            event("refused")
            assert not valid, f"valid matrix refused: {err}"
            one_line(err, path)
            return
    event("loaded")
    assert valid, f"bad matrix accepted: shape {matrix.shape}, expected rows {num_rows} dim {dim}"
    assert torch.equal(values, torch.from_numpy(as_float))
    assert encoded.mask.tolist() == [bool(row.any()) for row in as_float]


# ---------------------------------------------------------------------------------------- image folders
image_name = st.lists(st.sampled_from(["a", "b", "_", "x", "é", "-", "."]), min_size=1, max_size=4).map("".join)


@SETTINGS
@given(entities=st.lists(image_name.filter(lambda n: n not in (".", "..")), min_size=1, max_size=4, unique=True),
       files=st.lists(st.tuples(image_name, st.sampled_from([".jpg", ".PNG", ".jpeg", ".txt", ""]),
                                st.sampled_from(["", "", "sub"])), max_size=6))
def test_image_folders_map_each_file_to_the_longest_matching_entity(entities, files):
    kg = KnowledgeGraph.from_id_triples("img", entities, ["r"], {"train": torch.tensor([[0, 0, 0]])})
    with folder_with({}) as folder:
        placed = set()
        for stem, suffix, sub in files:
            target = folder / entities[0] / sub if sub else folder
            if sub and (folder / entities[0]).is_file():
                continue
            target.mkdir(parents=True, exist_ok=True)
            path = target / f"{stem}{suffix}"
            if path.exists() or path.is_dir() or not stem.strip("."):
                continue
            path.write_bytes(b"not decoded here")
            placed.add((path, bool(sub)))
        images = attach_images(kg, folder)
        expected: dict[int, list[str]] = {}
        for path, nested in placed:
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            if nested:  # a file in the entity's own folder belongs to it
                owner = 0
            else:  # <entity>.<ext> or <entity>_<anything>.<ext>: the longest entity before an underscore wins
                stem = path.stem
                cuts = [stem] + [stem[:i] for i in range(len(stem) - 1, 0, -1) if stem[i] == "_"]
                owner = next((entities.index(c) for c in cuts if c in entities), None)
            if owner is not None:
                expected.setdefault(owner, []).append(str(path))
        # a top-level folder named like an entity holds that entity's images (entities[0]'s, here)
        assert images == {k: sorted(v) for k, v in sorted(expected.items())}
        assert kg.images == images


def image_bytes(fmt: str, width: int, height: int, mode: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), color=0).save(buffer, format=fmt)
    return buffer.getvalue()


@SETTINGS
@given(fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]), width=st.integers(1, 9),
       height=st.integers(1, 9), cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                                   max_size=2))
def test_image_bytes_decode_to_a_finite_tensor_or_raise(fmt, width, height, cut, flips):
    from imf_kg.encoders.image import _ImageFiles, image_transform

    data = bytearray(image_bytes(fmt, width, height, "RGB" if fmt == "JPEG" else "L"))
    if cut < 0.3:
        data = data[: int(len(data) * cut / 0.3)]
    for where, value in flips:
        if data:
            data[int(where * (len(data) - 1))] = value
    with folder_with({f"image.{fmt.lower()}": bytes(data)}) as folder:
        path = folder / f"image.{fmt.lower()}"
        try:
            tensor = _ImageFiles([str(path)], image_transform(16))[0]
        except ToolkitError as err:
            event("refused")
            one_line(err, path)
            return
    event("decoded")
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32 and bool(torch.isfinite(tensor).all())
