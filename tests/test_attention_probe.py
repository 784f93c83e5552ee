"""benchmarks/attention_probe.py: which attentions it probes, and that its AUC reads the planted truth."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import attention_probe  # noqa: E402
from node_tasks.model import NodeOutputs  # noqa: E402
from node_tasks.synthetic import make_synthetic  # noqa: E402
from node_tasks.train import ModelConfig, NodeExperimentConfig, OptimConfig, build_model, train_selected  # noqa: E402

SMALL = {"nodes": {"paper": 90, "author": 60, "venue": 6}, "feature_dim": 8}
COMMUNITIES = {"communities": 2, "misalignment": 0.5, "identity_signal": 3.0}


def with_oracle(model, edit):
    """Make ``model`` return its own attention after ``edit(edges, masks, edge_type, att)`` has rewritten that of
    every author -> paper edge type (the probe then reads the planted truth the edit wrote)."""
    real_forward = model.forward

    def oracle_forward(x, edges, masks, return_attention=False):
        outputs = real_forward(x, edges, masks, return_attention=True)
        for per_type in outputs.attention:
            for edge_type, att in per_type.items():
                if edge_type[0] == "author":
                    edit(edges, masks, edge_type, att)
        return NodeOutputs(outputs.logits, attention=outputs.attention)

    model.forward = oracle_forward
    return model


def test_probes_every_layer_on_edge_types_from_types_with_distractors():
    data = make_synthetic(seed=0, **SMALL)
    model, _ = build_model("ima", data, ModelConfig(hidden=8, heads=2, layers=2))
    rows = attention_probe.attention_aucs(model, data)
    # venues have no image, so no distractors: only author -> paper, once per layer
    assert [(r["layer"], r["edge_type"]) for r in rows] == [(0, "author/writes/paper"), (1, "author/writes/paper")]
    assert all(0.0 <= r[f"auc_{k}"] <= 1.0 for r in rows for k in ("alpha", "b", "gamma", "beta"))
    assert not any(k.endswith(("_same", "_other")) for r in rows for k in r)  # no communities planted here
    hgt, _ = build_model("hgt-early", data, ModelConfig(hidden=8, heads=2, layers=2))
    assert attention_probe.attention_aucs(hgt, data) == []  # no attention to probe


def test_auc_is_one_for_attention_that_follows_the_planted_truth():
    data = make_synthetic(seed=0, **SMALL)
    model, _ = build_model("ima", data, ModelConfig(hidden=8, heads=2, layers=1))

    def follow_truth(edges, masks, edge_type, att):
        aligned = (~data.planted["author"]["distractor"][edges[edge_type][0]]).float()
        att.final = aligned.unsqueeze(-1).expand_as(att.final) + 0.1

    (row,) = attention_probe.attention_aucs(with_oracle(model, follow_truth), data)
    assert row["auc_beta"] == 1.0 and 0.2 < row["distractor_share"] < 0.6


def test_per_modality_match_auc_reads_the_planted_identity_on_the_community_design():
    data = make_synthetic(seed=0, **COMMUNITIES, **SMALL)
    model, _ = build_model("ima", data, ModelConfig(hidden=8, heads=2, layers=1))
    planted, target = data.planted["author"], data.planted["paper"]
    inactive_matches = []

    def follow_match(edges, masks, edge_type, att):
        src, dst = edges[edge_type]
        same = planted["community"][src] == target["community"][dst]
        for k, m in enumerate(att.modalities):
            shows = same & ((planted["deceptive_modality"][src] < 0)
                            | (planted["deceptive_modality"][src] == list(data.modalities).index(m)))
            # as the model does: alpha^m is 0 on an edge where either end lacks m, match or not
            active = (masks[edge_type[0]][m][src].bool() & masks[edge_type[2]][m][dst].bool()).float()
            inactive_matches.append(int(((1 - active) * shows.float()).sum()))
            att.inter_node[k] = ((shows.float() + 0.1) * active).unsqueeze(-1).expand_as(att.inter_node[k])

    (row,) = attention_probe.attention_aucs(with_oracle(model, follow_match), data)
    assert min(inactive_matches) > 0  # matching edges with a missing end exist, and they do not count
    assert row["auc_match_text"] == 1.0 and row["auc_match_image"] == 1.0
    # the base design plants no communities: no match columns
    plain, _ = build_model("ima", make_synthetic(seed=0, **SMALL), ModelConfig(hidden=8, heads=2, layers=1))
    assert not any(k.startswith("auc_match") for k in attention_probe.attention_aucs(plain, make_synthetic(seed=0, **SMALL))[0])


def test_fit_match_teaches_alpha_the_planted_identity_and_needs_the_community_design():
    data = make_synthetic(seed=0, noise=0.1, **COMMUNITIES, **SMALL)
    torch.manual_seed(0)
    model, _ = build_model("ima", data, ModelConfig(hidden=8, heads=2, layers=1))
    rows = attention_probe.fit_match(model, data, steps=80, lr=0.01, report_every=80)
    first, last = rows[0], rows[-1]
    assert [(r["step"], r["edge_type"]) for r in rows] == [(0, "author/writes/paper"), (80, "author/writes/paper")]
    assert last["loss"] < 0.5 * first["loss"]
    assert last["auc_match_text"] > 0.9 and last["auc_match_image"] > 0.9
    assert min(first["auc_match_text"], first["auc_match_image"]) < 0.8  # it was learned, not there from the start
    plain, _ = build_model("ima", make_synthetic(seed=0, **SMALL), ModelConfig(hidden=8, heads=2, layers=1))
    with pytest.raises(ValueError, match="community design"):
        attention_probe.fit_match(plain, make_synthetic(seed=0, **SMALL), steps=1)


def test_pretrain_match_starts_label_training_from_the_fitted_attention(tmp_path):
    options = {"seed": 0, "noise": 0.1, **COMMUNITIES, **SMALL}
    data = make_synthetic(**options)
    config = NodeExperimentConfig(data_options=options)
    config = replace(config, model=ModelConfig(name="ima", hidden=8, heads=2, layers=1), optim=OptimConfig(lr=0.01),
                     train=replace(config.train, epochs=1, device="cpu", progress=False))
    prepared = []

    def prepare(model):
        prepared.append(attention_probe.fit_match(model, data, steps=80, lr=0.01, report_every=80)[-1])

    plain = train_selected(config, data, tmp_path / "plain", seed=0, draw_curve=False)
    fitted = train_selected(config, data, tmp_path / "fitted", seed=0, draw_curve=False, prepare=prepare)
    assert len(prepared) == 1 and prepared[0]["auc_match_text"] > 0.9
    # one epoch of label training keeps what the fit taught; the same seed without it is blind
    (row,) = attention_probe.attention_aucs(fitted.model, data)
    (blind,) = attention_probe.attention_aucs(plain.model, data)
    assert row["auc_match_text"] > 0.85 and row["auc_match_image"] > 0.85
    assert blind["auc_match_text"] < 0.8


def test_community_split_scores_aligned_neighbours_of_the_same_and_of_other_communities_separately():
    data = make_synthetic(seed=0, **COMMUNITIES, **SMALL)
    model, _ = build_model("ima", data, ModelConfig(hidden=8, heads=2, layers=1))
    planted, target = data.planted["author"], data.planted["paper"]

    def favour_own_community(edges, masks, edge_type, att):  # beta prefers aligned authors of the community
        src, dst = edges[edge_type]
        same = planted["community"][src] == target["community"][dst]
        favoured = (same & ~planted["distractor"][src]).float()
        att.final = favoured.unsqueeze(-1).expand_as(att.final) + 0.1

    (row,) = attention_probe.attention_aucs(with_oracle(model, favour_own_community), data)
    assert row["auc_beta_same"] == 1.0 and row["auc_beta_other"] == 0.5
    assert 0.5 < row["auc_beta"] < 1.0
