"""The node_tasks data contract (validate_hetero / describe_hetero / build_hetero / stratified_split) and the
HGNN-IMA release-layout loader on small files generated in that layout."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from imf_kg.errors import DataFormatError, ToolkitError
from node_tasks.data import (
    build_hetero, describe_hetero, load_dataset, load_hgnn_ima_release, stratified_split, unique_edges,
    validate_hetero,
)


def tiny_graph():
    """4 movies (target, text + image), 2 directors (text only), one duplicated edge."""
    text = torch.arange(8, dtype=torch.float32).view(4, 2) + 1
    image = torch.ones(4, 3)
    features = {
        "movie": {"text": (text, torch.tensor([True, True, False, True])), "image": (image, torch.ones(4, dtype=torch.bool))},
        "director": {"text": (torch.ones(2, 2), torch.ones(2, dtype=torch.bool))},
    }
    relations = {("movie", "directed_by", "director"): ("directs", torch.tensor([[0, 1, 2, 3, 3], [0, 0, 1, 1, 1]]))}
    split = {"train": torch.tensor([0, 1]), "val": torch.tensor([2]), "test": torch.tensor([3])}
    return build_hetero({"movie": 4, "director": 2}, ["text", "image"], features, relations, "movie",
                        torch.tensor([0, 1, 0, 1]), split, ["a", "b"], notes=["tiny"])


def test_build_hetero_follows_the_contract():
    data = validate_hetero(tiny_graph())
    assert data.modalities == ["text", "image"] and data.target_node_type == "movie" and data.num_classes == 2
    # a masked-out row is zeroed; a type without the modality gets (n, 1) zeros and an all-False mask
    assert data["movie"].x_text[2].abs().sum() == 0 and data["movie"].x_text[3].abs().sum() > 0
    assert data["director"].x_image.shape == (2, 1) and not data["director"].mask_image.any()
    # the duplicated edge (3 -> 1) is kept once, and the reverse type has the transposed edges
    forward = data["movie", "directed_by", "director"].edge_index
    assert forward.shape == (2, 4)
    assert torch.equal(data["director", "directs", "movie"].edge_index, unique_edges(forward[1], forward[0], 4))
    assert data["movie"].train_mask.tolist() == [True, True, False, False]


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: setattr(d, "modalities", []), "modalities"),
    (lambda d: d["movie"].__setattr__("x_text", d["movie"].x_text.double()), "float32"),
    (lambda d: d["movie"].__setattr__("mask_image", d["movie"].mask_image[:3]), "mask_image"),
    (lambda d: d["movie"].x_text.__setitem__((2, 0), 5.0), "non-zero rows"),
    (lambda d: d["director"].__setattr__("x_image", torch.zeros(2, 4)), "all-False mask"),
    (lambda d: d["movie"].x_image.__setitem__((0, 0), float("nan")), "non-finite"),
    (lambda d: d["movie"].val_mask.__setitem__(0, True), "more than one split"),
    (lambda d: d["movie"].y.__setitem__(0, 7), "class ids"),
    (lambda d: d["movie"].y.__setitem__(1, -1), "unlabelled"),
    (lambda d: setattr(d, "class_names", ["a"]), "class_names"),
    (lambda d: d["director", "directs", "movie"].__setattr__("edge_index", torch.tensor([[0], [0]])), "reverse"),
    (lambda d: d["movie", "directed_by", "director"].__setattr__("edge_index", torch.tensor([[0, 0], [0, 0]])), "duplicate"),
    (lambda d: d["movie", "directed_by", "director"].__setattr__("edge_index", torch.tensor([[0], [5]])), "out of range"),
    (lambda d: setattr(d, "target_node_type", "actor"), "target_node_type"),
])
def test_validate_hetero_names_each_violation(corrupt, message):
    data = tiny_graph()
    corrupt(data)
    with pytest.raises(DataFormatError, match=message) as err:
        validate_hetero(data, source="tiny.pt")
    assert str(err.value).startswith("tiny.pt: found") and "\n" not in str(err.value)


def test_describe_hetero_reports_coverage_balance_and_splits():
    text = describe_hetero(tiny_graph())
    assert "text 3/4 (75.0%, d=2)" in text and "image 0/2 (0.0%, d=0)" in text
    assert "movie-directed_by-director" in text and "a 2 (50.0%), b 2 (50.0%)" in text
    assert "splits: train 2, val 1, test 1" in text and "note: tiny" in text


def test_stratified_split_is_exact_disjoint_balanced_and_seeded():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    parts = stratified_split(labels, (20, 10, 70), seed=3)
    assert [len(p) for p in parts] == [20, 10, 70]
    assert len(set(torch.cat(parts).tolist())) == 100
    assert np.bincount(labels[parts[0].numpy()]).tolist() == [10, 6, 4]
    assert all(torch.equal(a, b) for a, b in zip(parts, stratified_split(labels, (20, 10, 70), seed=3)))
    assert not torch.equal(parts[0], stratified_split(labels, (20, 10, 70), seed=4)[0])
    with pytest.raises(ToolkitError, match="labelled nodes"):
        stratified_split(labels, (60, 30, 20))


# ----------------------------------------------------------------------------- HGNN-IMA release layout
def write_imdb_release(folder, n=(6, 3, 4), width=5, seed=0):
    """Files named and shaped as in the release's ./imdb (spec 1.1), with rdf ids offset by the counts."""
    rng = np.random.default_rng(seed)
    n_m, n_d, n_a = n
    text = [sp.random(k, width, density=0.6, random_state=seed + i, format="csr") for i, k in enumerate(n)]
    text[0][1] = 0  # movie 1 has no keywords: text missing
    for i, matrix in enumerate(text):
        sp.save_npz(folder / f"features_{i}.npz", sp.csr_matrix(matrix))
    image = rng.standard_normal((n_m, width)).astype(np.float32)
    image[4] = 0.0  # movie 4 has no poster: image missing
    np.savez(folder / "img_feature_20_6_25_199.npz", feature=image)
    np.save(folder / "labels.npy", np.arange(n_m) % 3)
    np.save(folder / "node_types.npy", np.repeat([0, 1, 2], n))
    np.savez(folder / "train_val_test_idx1.npz", train_idx=np.array([0, 1, 2]), val_idx=np.array([3]),
             test_idx=np.array([4, 5]))
    rows = [(m, n_m + m % n_d, 0) for m in range(n_m)] + [(m, n_m + n_d + m % n_a, 2) for m in range(n_m)]
    rows += [(0, n_m + n_d, 2), (n_m, 0, 1)]  # a duplicate movie->actor row, and a type the loader ignores
    np.save(folder / "rdf.npy", np.array(rows, dtype=np.int64))
    return text, image


def test_release_imdb_layout(tmp_path):
    text, image = write_imdb_release(tmp_path)
    data = validate_hetero(load_hgnn_ima_release(tmp_path, "IMDB"))
    assert [data[nt].num_nodes for nt in ("movie", "director", "actor")] == [6, 3, 4]
    assert data.class_names == ["Action", "Comedy", "Drama"]
    assert torch.allclose(data["movie"].x_text, torch.as_tensor(text[0].toarray(), dtype=torch.float32))
    assert not data["movie"].mask_text[1] and not data["movie"].mask_image[4] and data["movie"].mask_image.sum() == 5
    # the release's director/actor "images" are copies of text: here they are absent, not copies
    assert not data["director"].mask_image.any() and data["actor"].x_image.shape == (4, 1)
    directed = data["movie", "directed_by", "director"].edge_index
    assert directed.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 2]]
    assert data["movie", "stars", "actor"].edge_index.size(1) == 6  # the duplicated row is dropped
    assert any("1 rdf rows" in note for note in data.notes)
    assert data["movie"].test_mask.tolist() == [False] * 4 + [True, True]


def test_release_douban_and_amazon_layouts(tmp_path):
    douban, amazon = tmp_path / "douban", tmp_path / "amazon"
    douban.mkdir()
    amazon.mkdir()
    rng = np.random.default_rng(1)
    for name, rows in (("movie", 4), ("directors", 2), ("actor", 3)):
        np.save(douban / f"features_douban_928_1_{name}.npz.npy", rng.standard_normal((rows, 6)))  # -> *.npz.npy
    np.savez(douban / "img_feature_douban_512_199.npz", feature=rng.standard_normal((4, 8)))
    np.save(douban / "labels.npy", np.array([0, 1, 1, 0]))
    np.savez(douban / "train_val_test_idx_929.npz", train_idx=[0, 1], val_idx=[2], test_idx=[3])
    np.save(douban / "douban_actor_rdf.npy", np.array([[0, 4, 0], [1, 5, 0], [2, 6, 2], [3, 8, 2], [3, 7, 2]]))
    data = validate_hetero(load_dataset(str(douban)))  # layout recognised from its files
    assert data.num_classes == 2 and data["movie"].x_image.shape == (4, 8)
    assert data["movie", "stars", "actor"].edge_index.tolist() == [[2, 3, 3], [0, 1, 2]]  # actor offset 4 + 2

    np.savez(amazon / "feature_item_amazon.npz", feature=rng.standard_normal((5, 4)))
    np.savez(amazon / "feature_review_amazon.npz", feature=rng.standard_normal((3, 4)))
    np.savez(amazon / "img_feature_20_1_25_199.npz", feature=rng.standard_normal((5, 4)))
    np.save(amazon / "labels.npy", np.array([0, 1, 2, 0, 1]))
    np.savez(amazon / "train_val_test_idx_amaze.npz", train_idx=[0, 1, 2], val_idx=[3], test_idx=[4])
    np.save(amazon / "rdf.npy", np.array([[0, 1, 0], [1, 2, 1], [2, 5, 2], [4, 7, 2]]))
    data = validate_hetero(load_hgnn_ima_release(amazon, "amazon"))
    # both directions of item-item survive (the published dict literal kept only the reversed one)
    assert data["item", "related", "item"].edge_index.tolist() == [[0, 1], [1, 2]]
    assert data["item", "related_by", "item"].edge_index.tolist() == [[1, 2], [0, 1]]
    assert data["review", "reviews", "item"].edge_index.tolist() == [[0, 2], [2, 4]]
    assert not data["review"].mask_image.any()


def test_release_errors_name_the_file(tmp_path):
    write_imdb_release(tmp_path)
    rdf = np.load(tmp_path / "rdf.npy")
    rdf[3, 1] = 999
    np.save(tmp_path / "rdf.npy", rdf)
    with pytest.raises(DataFormatError, match=r"rdf\.npy:4: found row \(3, 999, 0\)"):
        load_hgnn_ima_release(tmp_path, "IMDB")
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(ToolkitError, match="labels.npy: no such file"):
        load_hgnn_ima_release(tmp_path, "IMDB")
    with pytest.raises(ToolkitError, match="expected one of IMDB"):
        load_hgnn_ima_release(tmp_path, "ACM")
    with pytest.raises(ToolkitError, match="neither movie_metadata.csv"):
        load_dataset(str(tmp_path / "nowhere_else"), root=tmp_path.parent)


def test_precomputed_text_features_are_matched_by_text(tmp_path):
    """node_tasks.imdb text features encoded elsewhere: rows found by text whatever the file's order; a text the
    file lacks is an error naming the file; a bad file is an error, not a crash."""
    from node_tasks import imdb

    texts = ["Alien. Plot keywords: space", "Heat", "Up. Plot keywords: balloon, house"]
    values = np.arange(12, dtype=np.float32).reshape(4, 3)  # one extra row, stored in another order
    stored = [texts[2], "Unused", texts[0], texts[1]]
    path = imdb.save_text_features(tmp_path / "text.npz", stored, values, mask=[True, True, False, True])
    got, mask = imdb._encode_text(texts, str(path))
    assert torch.equal(got, torch.as_tensor(values[[2, 3, 0]])) and mask.tolist() == [False, True, True]
    with pytest.raises(DataFormatError, match=r"text\.npz.*no features for 1 of 2 movie texts.*'Jaws'"):
        imdb._encode_text(["Heat", "Jaws"], path)
    (tmp_path / "bad.npz").write_bytes(b"not an archive")
    with pytest.raises(DataFormatError, match=r"bad\.npz"):
        imdb._encode_text(texts, tmp_path / "bad.npz")
    with pytest.raises(ToolkitError, match="values"):
        imdb.save_text_features(tmp_path / "short.npz", texts, values)
