"""Every folder layout on tiny files, side data, PyKEEN sources, describe and the CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from imf_kg.cli import run
from imf_kg.data.describe import describe, render_description
from imf_kg.data.formats import detect_format
from imf_kg.data.kg import KnowledgeGraph
from imf_kg.data.loaders import load_kg, load_pykeen
from imf_kg.data.side_data import attach_features, attach_images, attach_text, image_keys
from imf_kg.errors import DataFormatError, UnseenEntityError

TRAIN = [("a", "likes", "b"), ("b", "likes", "c"), ("c", "knows", "a"), ("a", "knows", "c")]
VALID = [("b", "knows", "a"), ("a", "likes", "d")]  # d never occurs in train
TEST = [("c", "likes", "b"), ("c", "likes", "b"), ("a", "hates", "b")]  # a duplicate; hates is unseen


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def tsv(rows, sep="\t", end="\n") -> str:
    return "".join(sep.join(row) + end for row in rows)


def names_of(kg: KnowledgeGraph, triples: torch.Tensor) -> list[tuple[str, str, str]]:
    return [(kg.entity_names[h], kg.relation_names[r], kg.entity_names[t]) for h, r, t in triples.tolist()]


@pytest.fixture
def tsv_folder(tmp_path) -> Path:
    write(tmp_path / "train.txt", tsv(TRAIN))
    write(tmp_path / "valid.txt", tsv(VALID))
    write(tmp_path / "test.txt", tsv(TEST))
    return tmp_path


# ------------------------------------------------------------------------------------------------ tsv
def test_tsv_ids_follow_first_appearance_and_round_trip(tsv_folder):
    kg = load_kg(tsv_folder, unseen="keep")
    assert detect_format(tsv_folder) == "tsv"
    assert kg.entity_names == ["a", "b", "c", "d"]
    assert kg.relation_names == ["likes", "knows", "hates"]
    assert names_of(kg, kg.train) == TRAIN
    assert names_of(kg, kg.valid) == VALID
    assert names_of(kg, kg.test) == TEST
    assert kg.train.dtype == torch.long and kg.train.shape == (4, 3)


def test_tsv_unseen_policies_and_duplicates(tsv_folder):
    kept = load_kg(tsv_folder, unseen="keep")
    assert kept.report.unseen == {"valid": 1, "test": 1}
    assert kept.report.duplicates["test"] == 1 and kept.report.duplicates["train"] == 0
    dropped = load_kg(tsv_folder)  # default: drop
    assert names_of(dropped, dropped.valid) == [("b", "knows", "a")]
    assert names_of(dropped, dropped.test) == [("c", "likes", "b"), ("c", "likes", "b")]
    assert dropped.report.dropped == {"valid": 1, "test": 1}
    assert dropped.num_entities == 4  # d keeps its id: only its triple goes
    assert any("1 triples with an entity and 0 with a relation" in n for n in dropped.report.notes)
    assert any("0 triples with an entity and 1 with a relation" in n for n in dropped.report.notes)
    with pytest.raises(UnseenEntityError, match="valid"):
        load_kg(tsv_folder, unseen="error")


def test_inverse_relations_and_filter_index(tsv_folder):
    kg = load_kg(tsv_folder)
    assert kg.num_relations_with_inverse == 6
    inverse = kg.with_inverse(kg.train)
    assert inverse.shape == (8, 3)
    a, b, c = (kg.entity_to_id[x] for x in "abc")
    likes = kg.relation_to_id["likes"]
    assert inverse[4].tolist() == [b, likes + kg.num_relations, a]
    assert kg.relation_label(likes + kg.num_relations) == "likes^-1"
    # training labels: (a, likes) -> {b}; (b, likes^-1) -> {a}
    rows, tails = kg.train_index.lookup(torch.tensor([a, b]), torch.tensor([likes, likes + kg.num_relations]))
    assert sorted(zip(rows.tolist(), tails.tolist())) == [(0, b), (1, a)]
    # the filter adds valid and test: (c, likes) -> {b} from test
    dense = kg.filter_index.dense(torch.tensor([c]), torch.tensor([likes]))
    assert dense[0].nonzero().flatten().tolist() == [b]


def test_crlf_bom_blank_lines_and_padding_parse_like_clean_files(tmp_path):
    write(tmp_path / "train.txt", "\ufeff" + tsv(TRAIN, end="\r\n") + "\n  \n")
    write(tmp_path / "valid.txt", "b \tknows\t a\n")
    write(tmp_path / "test.txt", "New York\tin\ta")  # spaces inside a name, no final newline
    kg = load_kg(tmp_path, unseen="keep")
    assert names_of(kg, kg.train) == TRAIN
    assert names_of(kg, kg.valid) == [("b", "knows", "a")]
    assert names_of(kg, kg.test) == [("New York", "in", "a")]


def test_explicit_format_and_name(tsv_folder):
    kg = load_kg(str(tsv_folder), fmt="tsv", name="tiny")
    assert kg.name == "tiny"
    with pytest.raises(DataFormatError, match="train2id.txt"):
        load_kg(tsv_folder, fmt="openke")


# ------------------------------------------------------------------------------------------------ wn18
def test_wn18_layout_and_definitions_text(tmp_path):
    rows = [("001", "_hypernym", "002"), ("002", "_hyponym", "001")]
    for split in ("train", "valid", "test"):
        write(tmp_path / f"wordnet-mlj12-{split}.txt", tsv(rows))
    write(tmp_path / "wordnet-mlj12-definitions.txt",
          "001\t__stool_NN_2\tsolid excretory product  \n002\t__ice_cream_NN_1\ta frozen dessert\n"
          "999\t__other_VB_1\tnot in the graph\n")
    assert detect_format(tmp_path) == "wn18"
    kg = load_kg(tmp_path)
    assert kg.entity_names == ["001", "002"]
    assert kg.entity_text == ["stool -- solid excretory product", "ice cream -- a frozen dessert"]
    assert any("1 lines name entities absent" in note for note in kg.report.notes)


# ---------------------------------------------------------------------------------------------- openke
def test_openke_keeps_file_ids_and_reorders_columns(tmp_path):
    write(tmp_path / "entity2id.txt", "3\nzed\t2\nalpha\t0\nmid\t1\n")  # count line, tabs, lines not in id order
    write(tmp_path / "relation2id.txt", "r0 0\nr1 1\n")  # no count line, spaces
    write(tmp_path / "train2id.txt", "3\n0 1 0\n1 2 1\n2 0 0\n")  # head tail relation
    write(tmp_path / "valid2id.txt", "1\n0 2 1\n")
    write(tmp_path / "test2id.txt", "1\n2 1 0\n")
    assert detect_format(tmp_path) == "openke"
    kg = load_kg(tmp_path)
    assert kg.entity_names == ["alpha", "mid", "zed"]
    assert kg.relation_names == ["r0", "r1"]
    assert kg.train.tolist() == [[0, 0, 1], [1, 1, 2], [2, 0, 0]]  # (head, relation, tail)
    assert kg.valid.tolist() == [[0, 1, 2]]
    assert kg.test.tolist() == [[2, 0, 1]]


# ------------------------------------------------------------------------------------------------- imf
def test_imf_layout_with_trailing_dot_and_feature_pickles(tmp_path):
    write(tmp_path / "entity2id.txt", "<e/B> 1\n<e/A> 0\n<e/C> 2\n")
    write(tmp_path / "relation2id.txt", "<r/x> 0\n<r/y> 1\n")
    write(tmp_path / "train.txt", "<e/A> <r/x> <e/B> .\n<e/B> <r/y> <e/C> .\n")
    write(tmp_path / "val.txt", "<e/A> <r/y> <e/C>\n")
    write(tmp_path / "test.txt", "<e/C> <r/x> <e/A> .\n")
    image = np.arange(12, dtype=np.float64).reshape(3, 4)
    (tmp_path / "img_features.pkl").write_bytes(pickle.dumps(image))
    assert detect_format(tmp_path) == "imf"
    kg = load_kg(tmp_path)
    assert kg.entity_names == ["<e/A>", "<e/B>", "<e/C>"]
    assert kg.train.tolist() == [[0, 0, 1], [1, 1, 2]]
    assert kg.valid.tolist() == [[0, 1, 2]]
    assert kg.test.tolist() == [[2, 0, 0]]
    assert torch.equal(kg.features["image"].values, torch.tensor(image, dtype=torch.float32))
    assert kg.features["image"].mask.all() and "text" not in kg.features


# ------------------------------------------------------------------------------------------- side data
def test_entity_text_attached_automatically_and_by_call(tsv_folder, tmp_path):
    write(tsv_folder / "entity_text.tsv", "a\tAlpha -- the first\nc\tGamma\tthird\nz\tnot in graph\n")
    kg = load_kg(tsv_folder)
    assert kg.entity_text == ["Alpha -- the first", None, "Gamma\tthird", None]
    extra = write(tmp_path / "more" / "text.tsv", "d\tDelta\n")
    assert attach_text(kg, extra) == 1
    assert kg.entity_text[3] == "Delta" and kg.entity_text[0] == "Alpha -- the first"
    assert load_kg(tsv_folder, side_data=False).entity_text is None


def test_features_npy_pt_pkl_in_id_order_and_with_id_file(tsv_folder, tmp_path):
    kg = load_kg(tsv_folder)  # entities a b c d
    matrix = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", matrix)
    torch.save(torch.from_numpy(matrix), tmp_path / "f.pt")
    (tmp_path / "f.pkl").write_bytes(pickle.dumps(matrix))
    for name in ("f.npy", "f.pt", "f.pkl"):
        features = attach_features(kg, name, tmp_path / name)
        assert torch.equal(features.values, torch.from_numpy(matrix)) and features.mask.all()
        assert kg.features[name] is features and features.dim == 3
    rows = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.save(tmp_path / "partial.npy", rows)
    write(tmp_path / "partial.ids", "c\nunknown\na\n")
    partial = attach_features(kg, "image", tmp_path / "partial.npy", ids_path=tmp_path / "partial.ids")
    assert partial.mask.tolist() == [True, False, True, False]
    assert partial.values.tolist() == [[5.0, 6.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]]
    assert partial.coverage == 2
    assert any("1 names name entities absent" in note for note in kg.report.notes)


def test_feature_pickle_cannot_run_code(tsv_folder, tmp_path):
    kg = load_kg(tsv_folder)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataFormatError, match="refusing to unpickle builtins.print"):
        attach_features(kg, "image", tmp_path / "evil.pkl")


def test_images_from_subfolders_and_file_names(tmp_path):
    kg = KnowledgeGraph.from_labeled_triples(
        "img", {"train": [("/m/01x", "r", "ice_cream"), ("ice", "r", "<http://dbpedia.org/resource/Hull>")]}
    )
    ids = kg.entity_to_id
    folder = tmp_path / "images"
    write(folder / "m.01x" / "0.jpg", b"x")
    write(folder / "m.01x" / "1.PNG", b"x")
    write(folder / "m.01x" / "notes.txt", b"x")
    write(folder / "ice_cream_1.jpg", b"x")  # the longest entity name before an underscore wins
    write(folder / "ice.png", b"x")
    write(folder / "ice_2.jpeg", b"x")
    write(folder / "Hull.jpg", b"x")
    write(folder / "stranger_1.jpg", b"x")
    images = attach_images(kg, folder)
    assert kg.images is images
    assert [Path(p).name for p in images[ids["/m/01x"]]] == ["0.jpg", "1.PNG"]
    assert [Path(p).name for p in images[ids["ice_cream"]]] == ["ice_cream_1.jpg"]
    assert [Path(p).name for p in images[ids["ice"]]] == ["ice.png", "ice_2.jpeg"]
    assert [Path(p).name for p in images[ids["<http://dbpedia.org/resource/Hull>"]]] == ["Hull.jpg"]
    assert any("1 images name entities absent" in note for note in kg.report.notes)
    assert image_keys("/m/01x") == ["/m/01x", "m.01x"]


# --------------------------------------------------------------------------------------------- pykeen
@pytest.mark.parametrize("name", ["nations", "umls", "kinships"])
def test_pykeen_bundled_datasets_keep_pykeen_ids(name):
    import pykeen.datasets

    reference = pykeen.datasets.get_dataset(dataset=name)
    kg = load_kg(name.upper() if name == "nations" else name)
    assert kg.num_entities == reference.training.num_entities
    assert kg.num_relations == reference.training.num_relations
    assert torch.equal(kg.train, reference.training.mapped_triples.long())
    for split, factory in (("valid", reference.validation), ("test", reference.testing)):
        assert len(kg.split(split)) + kg.report.dropped[split] == factory.num_triples
    assert kg.entity_names[0] == min(reference.training.entity_to_id)  # PyKEEN numbers labels sorted


def test_pykeen_dataset_and_triples_factory_objects():
    import pykeen.datasets

    dataset = pykeen.datasets.get_dataset(dataset="nations")
    assert torch.equal(load_pykeen(dataset).valid, dataset.validation.mapped_triples.long())
    kg = load_kg(dataset.training)
    assert len(kg.train) == dataset.training.num_triples and len(kg.valid) == len(kg.test) == 0
    assert any("TriplesFactory" in note for note in kg.report.notes)
    three = load_kg((dataset.training, dataset.validation, dataset.testing))
    assert torch.equal(three.test, dataset.testing.mapped_triples.long())


def test_unknown_dataset_name_is_refused_without_download():
    with pytest.raises(DataFormatError, match="neither a folder nor a bundled dataset"):
        load_kg("fb15k237")


# ------------------------------------------------------------------------------------ describe and CLI
def test_describe_counts(tsv_folder):
    write(tsv_folder / "entity_text.tsv", "a\tAlpha\n")
    kg = load_kg(tsv_folder)
    summary = describe(kg)
    assert summary["entities"] == 4 and summary["relations"] == 3
    assert summary["triples"] == {"train": 4, "valid": 1, "test": 2}
    assert summary["duplicates"]["test"] == 1
    assert summary["unseen"] == {"valid": 1, "test": 1} and summary["dropped"] == {"valid": 1, "test": 1}
    assert summary["shared"] == {"train&valid": 0, "train&test": 0, "valid&test": 0}
    assert summary["entities_without_train_triples"] == 1  # d
    assert summary["modalities"]["text"]["entities"] == 1
    text = render_description(summary)
    assert "entities   4" in text and "valid 1 (1 dropped)" in text and "1 / 4 entities (25.0%)" in text
    json.dumps(summary)  # JSON-ready


def test_describe_counts_shared_triples(tmp_path):
    write(tmp_path / "train.txt", tsv(TRAIN))
    write(tmp_path / "valid.txt", tsv(TRAIN[:2]))
    write(tmp_path / "test.txt", tsv(TRAIN[1:2] * 2))
    summary = describe(load_kg(tmp_path))
    assert summary["shared"] == {"train&valid": 2, "train&test": 1, "valid&test": 1}


def test_cli_describe_json_and_text(tsv_folder, capsys):
    # in-process: a subprocess spends most of its time importing torch (the exit-2 path runs as a subprocess
    # in test_data_malformed.py)
    assert run(["data", "describe", str(tsv_folder), "--json", "--format", "tsv"], commands=("data",)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["triples"] == {"train": 4, "valid": 1, "test": 2}
    assert run(["data", "describe", str(tsv_folder)], commands=("data",)) == 0
    assert "duplicates train 0  valid 0  test 1" in capsys.readouterr().out
    assert run(["data", "describe", str(tsv_folder), "--unseen", "error"], commands=("data",)) == 2
    err = capsys.readouterr().err
    assert "absent from train" in err and len(err.strip().splitlines()) == 1
