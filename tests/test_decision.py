"""DecisionFusion: weights, the probability-space average returned as a logit, and learning the weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imf_kg.decision import DecisionFusion

NAMES = ["structure", "text", "tucker"]


def _scores(batch=4, n=6, seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    return {name: scale * torch.randn(batch, n, generator=generator, dtype=torch.float64) for name in NAMES}


def test_uniform_mode_reproduces_the_published_average_of_sigmoids():
    fusion = DecisionFusion(NAMES, mode="uniform")
    scores = _scores()
    fused = fusion(scores)
    average = sum(torch.sigmoid(s) for s in scores.values()) / 3
    torch.testing.assert_close(torch.sigmoid(fused).double(), average)
    assert list(fusion.parameters()) == []
    # same ranking as the average itself
    assert torch.equal(fused.argsort(dim=1), average.argsort(dim=1))


def test_learned_weights_sum_to_one_and_fuse_probabilities():
    fusion = DecisionFusion(NAMES, num_relations=5, mode="learned", per_relation=True)
    with torch.no_grad():
        fusion.weight_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
        fusion.relation_weight_logits.weight.normal_()
    relations = torch.tensor([0, 3, 3, 4])
    weights = fusion.weights(relations)
    assert weights.shape == (4, 3)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(fusion.weights(relations[:1])[0], weights[0])
    scores = _scores()
    expected = sum(weights[:, m:m + 1].double() * torch.sigmoid(scores[name]) for m, name in enumerate(NAMES))
    torch.testing.assert_close(torch.sigmoid(fusion(scores, relations)).double(), expected, rtol=1e-5, atol=1e-6)
    global_only = DecisionFusion(NAMES)
    torch.testing.assert_close(global_only.weights(), torch.full((3,), 1 / 3))  # starts uniform


def test_fused_logit_is_stable_for_extreme_scores():
    fusion = DecisionFusion(["a", "b"], mode="uniform")
    scores = {"a": torch.tensor([[80.0, -80.0, 80.0, float("-inf")]]),
              "b": torch.tensor([[80.0, -80.0, -80.0, float("-inf")]])}
    fused = fusion(scores)
    assert fused[0, 0] > 70 and fused[0, 1] < -70  # both sure: stays sure (naive log(P / (1-P)) would give inf)
    assert abs(float(fused[0, 2])) < 1e-4  # one sure yes, one sure no: P = 1/2
    assert fused[0, 3] == float("-inf")  # filtered candidates stay last
    target = torch.tensor([[1.0, 0.0, 1.0]])
    loss = F.binary_cross_entropy_with_logits(fused[:, :3], target)
    assert torch.isfinite(loss)


def test_joint_loss_learns_to_trust_the_better_modality():
    torch.manual_seed(0)
    labels = (torch.rand(64, 20) < 0.2).float()
    scores = {"good": 6 * (2 * labels - 1) + torch.randn(64, 20), "noisy": 3 * torch.randn(64, 20)}
    fusion = DecisionFusion(["good", "noisy"])
    optimiser = torch.optim.Adam(fusion.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        loss = F.binary_cross_entropy_with_logits(fusion(scores), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    weights = fusion.weights().detach()
    assert weights[0] > 0.8 and losses[-1] < losses[0]


def test_gradients_reach_scores_and_weights_per_relation():
    fusion = DecisionFusion(NAMES, num_relations=6, per_relation=True)
    scores = {k: v.float().requires_grad_() for k, v in _scores().items()}
    relations = torch.tensor([1, 1, 4, 5])
    target = torch.zeros(4, 6)
    target[:, 0] = 1
    F.binary_cross_entropy_with_logits(fusion(scores, relations), target).backward()
    assert fusion.weight_logits.grad.abs().sum() > 0
    grad_rows = fusion.relation_weight_logits.weight.grad.abs().sum(dim=1)
    assert (grad_rows[[1, 4, 5]] > 0).all() and (grad_rows[[0, 2, 3]] == 0).all()
    assert all(s.grad.abs().sum() > 0 for s in scores.values())


def test_rejects_bad_settings_and_missing_scores():
    with pytest.raises(ValueError):
        DecisionFusion(NAMES, mode="max")
    with pytest.raises(ValueError):
        DecisionFusion(NAMES, per_relation=True)  # no num_relations
    with pytest.raises(ValueError):
        DecisionFusion(NAMES, num_relations=3, mode="uniform", per_relation=True)
    with pytest.raises(ValueError):
        DecisionFusion(["a", "a"])
    fusion = DecisionFusion(NAMES, num_relations=3, per_relation=True)
    with pytest.raises(KeyError):
        fusion({"structure": torch.zeros(1, 2)})
    with pytest.raises(ValueError):
        fusion.weights()  # per-relation weights need the relations
