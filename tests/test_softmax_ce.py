"""1-N softmax cross-entropy (imf_kg/scorers/softmax_ce.py): value and gradient against autograd's, and IMF's switch."""

from __future__ import annotations

import pytest
import torch

from imf_kg.scorers import label_distribution, softmax_cross_entropy


def test_value_and_gradient_equal_the_log_softmax_form():
    torch.manual_seed(0)
    logits = (torch.randn(5, 40) * 4).requires_grad_()
    targets = (torch.rand(5, 40) < 0.1).float()
    targets[:, 0] = 1.0
    targets = targets * 0.9 + 0.1 / 40  # smoothed rows, as OneToNTask builds them
    loss = softmax_cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    reference_logits = logits.detach().clone().requires_grad_()
    reference = -(targets / targets.sum(1, keepdim=True) * torch.log_softmax(reference_logits, 1)).sum(1).mean()
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.allclose(grad, reference_logits.grad, atol=1e-7)
    assert softmax_cross_entropy(logits + 100.0, targets).item() == pytest.approx(loss.item(), rel=1e-5)  # shift
    normalized = softmax_cross_entropy(logits, label_distribution(targets), normalized=True)
    assert normalized.item() == pytest.approx(loss.item(), rel=1e-6)  # the labels normalised once, as IMF does


def test_empty_label_rows_and_shape_mismatch_are_refused():
    with pytest.raises(ValueError, match="positive entry"):
        softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="same"):
        softmax_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))


def test_imf_uses_the_configured_loss_for_every_branch_and_the_decision():
    from imf_kg.data.kg import EntityFeatures, KnowledgeGraph
    from imf_kg.models.imf import IMF, IMFConfig

    kg = KnowledgeGraph.from_id_triples("tiny", [f"e{i}" for i in range(6)], ["r"],
                                        {"train": torch.tensor([[0, 0, 1], [2, 0, 3], [4, 0, 5]])})
    features = {"text": EntityFeatures(torch.randn(6, 5), torch.ones(6, dtype=torch.bool))}
    heads, relations = torch.tensor([0, 2]), torch.tensor([0, 1])
    targets = torch.zeros(2, 6)
    targets[0, 1] = targets[1, 3] = 1.0
    losses = {}
    for name in ("bce", "softmax"):
        torch.manual_seed(0)
        config = IMFConfig(modalities=("structure", "text"), entity_dim=4, relation_dim=3, fusion_rank=4,
                           loss=name, contrastive_weight=0.0)
        model = IMF(kg.num_entities, kg.num_relations, config, features=features)
        total, logs = model.loss(heads, relations, targets)
        prefix = "bce" if name == "bce" else "ce"
        assert {f"{prefix}_structure", f"{prefix}_text", f"{prefix}_tucker", f"{prefix}_decision"} <= set(logs)
        total.backward()
        losses[name] = total.item()
    assert losses["softmax"] > 4 * 1.0  # four CE terms near log(6) each, far above four BCE terms near 0.69
