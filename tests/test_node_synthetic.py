"""The community design of the synthetic generator (node_tasks.synthetic_communities): what it plants and
which comparisons can see it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from imf_kg.errors import ConfigError
from node_tasks.data import validate_hetero
from node_tasks.synthetic import make_synthetic, modality_group

OPTIONS = dict(communities=4, misalignment=0.5, homophily=0.9, distractor_signal=2.0, identity_signal=3.0)
IDENTITY_DIM = 8


def test_contract_widths_determinism_and_default_unchanged():
    data = make_synthetic(seed=3, **OPTIONS)
    validate_hetero(data, "synthetic")
    assert data["paper"].x_text.shape == (600, 32 + IDENTITY_DIM)
    again = make_synthetic(seed=3, **OPTIONS)
    torch.testing.assert_close(again["author"].x_image, data["author"].x_image)
    # communities=0 is the base design, bit for bit
    torch.testing.assert_close(make_synthetic(seed=3, communities=0)["author"].x_text, make_synthetic(seed=3)["author"].x_text)
    with pytest.raises(ConfigError, match="communities"):
        make_synthetic(communities=2, same_community=1.5)


def test_community_is_independent_of_class():
    data = make_synthetic(seed=0, **OPTIONS)
    community, labels = data.planted["paper"]["community"], data["paper"].y
    counts = torch.zeros(4, 3)
    counts.index_put_((community, labels), torch.ones(len(labels)), accumulate=True)
    assert counts.min() >= 49 and counts.max() <= 51  # 600 papers: 50 per (community, class)


def test_distractors_show_a_wrong_class_everywhere_and_their_community_in_one_modality():
    data = make_synthetic(seed=1, noise=0.0, missing_rate=0.0, **OPTIONS)
    planted, codes = data.planted["author"], data.planted["identity_codes"]
    distractors = planted["distractor"].nonzero().flatten()
    assert 0.45 < len(distractors) / len(planted["distractor"]) < 0.55
    for k, m in enumerate(data.modalities):
        x = data["author"][f"x_{m}"]
        shown_identity = (x[:, -IDENTITY_DIM:] @ codes[m].T).argmax(-1)
        deceptive = planted["deceptive_modality"] == k
        aligned = ~planted["distractor"]
        assert torch.equal(shown_identity[aligned | deceptive], planted["community"][aligned | deceptive])
        assert not (shown_identity[planted["distractor"] & ~deceptive] == planted["community"][planted["distractor"] & ~deceptive]).any()
        # class part: the group shown differs from the node's own group for every distractor
        class_part = x[:, :-IDENTITY_DIM]
        latent = planted["latent_class"]
        own_group = torch.as_tensor(modality_group(latent.numpy(), k))
        reference = {}
        for v in aligned.nonzero().flatten().tolist():  # aligned nodes show their own group's prototype
            reference.setdefault(int(own_group[v]), class_part[v])
        for v in distractors.tolist():
            same_as_own = torch.allclose(class_part[v] / class_part[v].norm(),
                                         reference[int(own_group[v])] / reference[int(own_group[v])].norm())
            assert not same_as_own


def test_only_the_cross_modal_disagreement_separates_distractors():
    """Per edge, the similarity of the neighbour's identity part to the target's community code: within one
    modality (or summed over modalities) it does not tell distractors from aligned neighbours; the absolute
    difference between the modalities does."""
    data = make_synthetic(seed=0, missing_rate=0.0, **OPTIONS)
    edges = data["paper", "written_by", "author"].edge_index
    planted = data.planted["author"]
    target_community = data.planted["paper"]["community"][edges[0]]
    distractor = planted["distractor"][edges[1]].numpy()
    same = (planted["community"][edges[1]] == target_community).numpy()
    similarity = {}
    for k, m in enumerate(data.modalities):
        identity = data["author"][f"x_{m}"][:, -IDENTITY_DIM:]
        similarity[m] = (identity[edges[1]] * data.planted["identity_codes"][m][target_community]).sum(-1).numpy()
        # a distractor whose deceptive modality is m looks, in m, like a same-community aligned neighbour
        deceptive_here = (planted["deceptive_modality"][edges[1]] == k).numpy()
        pair = (distractor & deceptive_here) | (~distractor & same)
        assert abs(roc_auc_score(distractor[pair], similarity[m][pair]) - 0.5) < 0.1
    summed = similarity["text"] + similarity["image"]
    assert abs(roc_auc_score(~distractor, summed) - 0.5) < 0.1
    disagreement = abs(similarity["text"] - similarity["image"])
    assert roc_auc_score(distractor, disagreement) > 0.75


DECOYS = dict(communities=4, decoys=True, identity_signal=3.0, misalignment=0.5, nodes={"paper": 600, "author": 600, "venue": 30},
              degree={"author": 6}, homophily={"author": 1.0, "venue": 0.5})


def test_decoys_lead_every_target_to_one_wrong_class_that_counting_cannot_tell_apart():
    data = make_synthetic(seed=2, missing_rate=0.0, noise=0.0, **DECOYS)
    src, dst = data["paper", "written_by", "author"].edge_index
    planted = data.planted["author"]
    decoy, labels = data.planted["paper"]["decoy"], data["paper"].y
    assert not (decoy == labels).any()
    distractor = planted["distractor"][dst]
    neighbour_class = planted["latent_class"][dst]
    assert torch.equal(neighbour_class[distractor], decoy[src[distractor]])  # the target's decoy, always
    assert torch.equal(neighbour_class[~distractor], labels[src[~distractor]])  # homophily 1 for authors
    # half of the author edges lead to decoys: a paper's own class and its decoy are equally frequent around it
    assert abs(float(distractor.float().mean()) - 0.5) < 0.05
    # decoys show the target's community in exactly one modality; aligned authors in both or in none
    codes = data.planted["identity_codes"]
    target_community = data.planted["paper"]["community"][src]
    matches = torch.zeros(len(src), dtype=torch.long)
    for m in data.modalities:
        shown = (data["author"][f"x_{m}"][:, -IDENTITY_DIM:] @ codes[m].T).argmax(-1)[dst]
        matches += (shown == target_community).long()
    assert (matches[distractor] == 1).all() and (matches[~distractor] != 1).all()
    # and they show their own class, not a wrong one: same class part as an aligned author of that class
    x = data["author"].x_text[:, :-IDENTITY_DIM]
    latent = planted["latent_class"]
    for c in range(3):
        rows = x[latent == c]
        assert torch.allclose(rows, rows[:1].expand_as(rows))


def test_decoys_need_communities_and_homophily_may_differ_by_type():
    with pytest.raises(ConfigError, match="decoys"):
        make_synthetic(decoys=True)
    with pytest.raises(ConfigError, match="homophily"):
        make_synthetic(homophily={"paper": 0.5})
    with pytest.raises(ConfigError, match="homophily"):
        make_synthetic(homophily={"venue": 1.5})
    data = make_synthetic(seed=0, homophily={"venue": 1.0, "author": 0.0}, misalignment=0.0)
    src, dst = data["paper", "published_in", "venue"].edge_index
    assert torch.equal(data.planted["venue"]["latent_class"][dst], data["paper"].y[src])
    # a mapping that repeats the single value draws the same graph
    same = make_synthetic(seed=3, homophily={"author": 0.8, "venue": 0.8})
    assert torch.equal(same["paper", "written_by", "author"].edge_index,
                       make_synthetic(seed=3)["paper", "written_by", "author"].edge_index)

def test_aligned_match_half_ties_the_sum_of_similarities_and_only_the_disagreement_separates():
    data = make_synthetic(seed=0, missing_rate=0.0, noise=0.0, same_community=1.0, aligned_match=0.5, **DECOYS)
    src, dst = data["paper", "written_by", "author"].edge_index
    distractor = data.planted["author"]["distractor"][dst].numpy()
    sims = {}
    for m in data.modalities:
        target = data["paper"][f"x_{m}"][src, -IDENTITY_DIM:]
        neighbour = data["author"][f"x_{m}"][dst, -IDENTITY_DIM:]
        sims[m] = (target * neighbour).sum(-1).numpy()
    text, image = sims["text"], sims["image"]
    # a linear score on the concatenated modalities cannot rank aligned authors above both kinds of decoy
    assert abs(roc_auc_score(distractor, text + image) - 0.5) < 0.1
    assert roc_auc_score(distractor, np.abs(text - image)) > 0.95
    # an aligned author shows half its own code and half a foreign one; a distractor one full code per modality
    codes, signal = data.planted["identity_codes"], DECOYS["identity_signal"]
    planted = data.planted["author"]
    aligned = ~planted["distractor"]
    own = planted["community"][aligned]
    for m in data.modalities:
        rest = data["author"][f"x_{m}"][aligned, -IDENTITY_DIM:] - 0.5 * signal * codes[m][own]
        distance = torch.cdist(rest, 0.5 * signal * codes[m])  # (aligned authors, K)
        assert bool((distance.min(-1).values < 1e-2).all())  # float32 cdist; codes lie >= 1 apart
        assert not bool((distance.argmin(-1) == own).any())
    with pytest.raises(ConfigError, match="aligned_match"):
        make_synthetic(aligned_match=0.5)
    with pytest.raises(ConfigError, match="aligned_match"):
        make_synthetic(communities=1, aligned_match=0.5)


def test_orthogonal_codes_make_every_graph_pose_the_same_geometry():
    from node_tasks.synthetic import _unit_rows

    grams = []
    for seed in (0, 1, 2):
        data = make_synthetic(seed=seed, orthogonal_codes=True, **OPTIONS)
        for codes in data.planted["identity_codes"].values():
            torch.testing.assert_close(codes @ codes.T, torch.eye(4), atol=1e-5, rtol=0)
        random_codes = make_synthetic(seed=seed, **OPTIONS).planted["identity_codes"]["text"]
        grams.append((random_codes @ random_codes.T - torch.eye(4)).abs().max())
    assert max(grams) > 0.3  # the default draws overlapping codes, differently on every graph
    # the class prototypes too: with noise 0 the class parts of two groups' aligned authors are orthogonal
    data = make_synthetic(seed=0, noise=0.0, missing_rate=0.0, orthogonal_codes=True, **OPTIONS)
    aligned = ~data.planted["author"]["distractor"]
    groups = modality_group(data.planted["author"]["latent_class"].numpy(), 0)
    x = data["author"].x_text[:, :32]
    first, second = x[torch.as_tensor(aligned.numpy() & (groups == 0))][0], x[torch.as_tensor(aligned.numpy() & (groups == 1))][0]
    assert abs(float(first @ second)) < 1e-4 and float(first.norm()) > 1.0
    rng = np.random.default_rng(0)
    rows = _unit_rows(rng, 5, 7, orthogonal=True)
    np.testing.assert_allclose(rows @ rows.T, np.eye(5), atol=1e-10)
    with pytest.raises(ConfigError, match="orthogonal_codes needs at most"):
        make_synthetic(identity_dim=2, orthogonal_codes=True, **OPTIONS)


def test_node_counts_must_be_integers_with_a_hint_for_yaml_flow_style():
    # "{paper:600}" without a space is YAML for the key "paper:600" with no value
    with pytest.raises(ConfigError, match="space after each colon"):
        make_synthetic(nodes={"paper:600": None, "author:60": None})
    assert make_synthetic(nodes={"paper": np.int64(30), "author": 20, "venue": 6})["paper"].num_nodes == 30


@pytest.mark.parametrize("name", ["synthetic", "synthetic_decoys", "imdb"])
def test_shipped_node_configs_load(name):
    from pathlib import Path

    from node_tasks.compare import CONFIG_DIR, resolve_config

    path = CONFIG_DIR / f"{name}.yaml"
    config = resolve_config("synthetic" if name.startswith("synthetic") else "imdb", str(path), [])
    assert Path(path).is_file() and config.train.epochs > 0 and config.model.hidden % config.model.heads == 0


def test_decoy_config_builds_the_decoy_design_with_the_product_attention():
    from node_tasks.compare import CONFIG_DIR, load_dataset, resolve_config
    from node_tasks.train import build_model

    config = resolve_config("synthetic", str(CONFIG_DIR / "synthetic_decoys.yaml"), [])
    data = load_dataset("synthetic", config.data_options)
    assert data["paper"].num_nodes == 600 and data["author"].num_nodes == 600
    decoy = data.planted["paper"]["decoy"]
    assert bool((decoy != data["paper"].y).all())  # every paper's decoy class is a wrong class
    model, _ = build_model("ima", data, config.model)
    assert {layer.final_attention for layer in model.layers} == {"product"}
    softmax, _ = build_model("ima-softmax", data, config.model)
    assert {layer.final_attention for layer in softmax.layers} == {"softmax"}
