"""The optimised paths give the straightforward computation's values and gradients; evaluation caches once.

Covers: the packed training path of the contextual scorer (vs the gather path and vs an einsum), the cheap
dropout masks (distribution, reproducibility), the fused BCE, the probability-space decision fusion (vs the
log-space form, extreme scores included), IMF's sparse query-row gradient, and that an evaluation computes the
fused candidates and the relations' context matrices exactly once.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imf_kg.decision import DecisionFusion, _DecisionLogit, log_space_logit
from imf_kg.scorers import ContextualRelationScorer, bce_with_logits, distinct_relations
from imf_kg.scorers import contextual
from imf_kg.scorers.contextual import _PackedGroupedProduct, _PackedRelationFirst, pack_slots
from imf_kg.scorers.dropout import dropout, keep_mask


def _relation_batch(batch=11, num_relations=4, d=5, d_r=3, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d, generator=generator, dtype=dtype)
    relations = torch.randn(num_relations, d_r, generator=generator, dtype=dtype)
    core = torch.randn(d_r, d * d, generator=generator, dtype=dtype)
    index = torch.randint(0, num_relations, (batch,), generator=generator)
    index[:num_relations] = torch.arange(num_relations)  # every relation has a query
    return x, relations, core, index


# ------------------------------------------------------------------------------------------ scorer paths
def test_pack_slots_ranks_queries_within_their_relation():
    index = torch.tensor([2, 0, 2, 2, 1, 0])
    slot, width = pack_slots(index, 3)
    assert slot.tolist() == [0, 0, 1, 2, 0, 1] and width == 3


def test_packed_relation_first_equals_einsum_with_the_same_mask_and_gradchecks():
    x, relations, core, index = _relation_batch()
    d = x.shape[1]
    slot, width = pack_slots(index, relations.shape[0])
    keep = (torch.rand(relations.shape[0], d * d, generator=torch.Generator().manual_seed(1)) > 0.4).double()
    scale = 1 / 0.6
    leaves = [t.clone().requires_grad_() for t in (x, relations, core)]
    got = _PackedRelationFirst.apply(*leaves, index, slot, width, keep, scale)
    weights = torch.linspace(-1, 1, got.numel(), dtype=got.dtype).view_as(got)
    (got * weights).sum().backward()
    reference_leaves = [t.clone().requires_grad_() for t in (x, relations, core)]
    rx, rrel, rcore = reference_leaves
    matrices = ((rrel @ rcore) * keep * scale).view(-1, d, d)
    expected = torch.einsum("bi,bij->bj", rx, matrices[index])  # the straightforward (B, d, d) computation
    (expected * weights).sum().backward()
    torch.testing.assert_close(got, expected)
    for leaf, reference in zip(leaves, reference_leaves):
        torch.testing.assert_close(leaf.grad, reference.grad)
    assert torch.autograd.gradcheck(
        lambda a, r, c: _PackedRelationFirst.apply(a, r, c, index, slot, width, keep, scale),
        tuple(t.clone().requires_grad_() for t in (x, relations, core)))
    matrices = torch.randn(relations.shape[0], d, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, m: _PackedGroupedProduct.apply(a, m, index, slot, width),
                                    (x.clone().requires_grad_(), matrices))


@pytest.mark.parametrize("hidden", [0.0, 0.4])
def test_training_scorer_packed_path_equals_gather_path(monkeypatch, hidden):
    """Same seed -> same dropout masks in both paths, so outputs and every gradient agree."""
    d, d_r, n = 6, 4, 9
    generator = torch.Generator().manual_seed(3)
    entities = torch.randn(16, d, generator=generator)
    table = torch.randn(5, d_r, generator=generator)
    relation_ids = torch.randint(0, 5, (16,), generator=generator)
    candidates = torch.randn(n, d, generator=generator)
    unique, index = distinct_relations(relation_ids)
    results = {}
    for name, factor in (("packed", contextual.MAX_PADDING_FACTOR), ("gather", 0)):
        monkeypatch.setattr(contextual, "MAX_PADDING_FACTOR", factor)
        torch.manual_seed(0)
        scorer = ContextualRelationScorer(d, d_r, dropouts=(0.3, hidden, 0.5)).train()
        ent, rel = entities.clone().requires_grad_(), table.clone().requires_grad_()
        torch.manual_seed(1)
        scores = scorer(ent, rel[unique], candidates, index)
        (scores * torch.linspace(-1, 1, scores.numel()).view_as(scores)).sum().backward()
        results[name] = [scores.detach(), ent.grad, rel.grad] + [p.grad for p in scorer.parameters()]
    for packed, gathered in zip(results["packed"], results["gather"]):
        torch.testing.assert_close(packed, gathered, rtol=1e-4, atol=1e-5)


def test_packed_training_path_under_bf16_autocast_gives_parameter_dtype_gradients():
    """The trainer autocasts on CUDA; backward runs outside autocast, so the node must keep one dtype itself."""
    torch.manual_seed(0)
    scorer = ContextualRelationScorer(16, 8).train()
    entities, table = torch.randn(32, 16, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    unique, index = distinct_relations(torch.randint(0, 6, (32,)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = scorer(entities, table[unique], torch.randn(20, 16), index)
    scores.float().sum().backward()
    assert scores.dtype == torch.bfloat16
    for grad in (entities.grad, table.grad, scorer.core.grad):
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_evaluation_with_precomputed_matrices_equals_contextualize():
    scorer = ContextualRelationScorer(5, 3).eval()
    with torch.no_grad():
        scorer.input_norm.running_mean.normal_()
        scorer.output_norm.running_var.uniform_(0.5, 2.0)
    x, _, _, index = _relation_batch(dtype=torch.float32)
    table = torch.randn(4, 3)
    with torch.no_grad():
        expected = scorer.contextualize(x, table[index])
        got = scorer.contextualize_with_matrices(x, scorer.context_matrices(table), index)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        scorer.train().contextualize_with_matrices(x, scorer.context_matrices(table), index)


# ---------------------------------------------------------------------------------------------- dropout
def test_keep_mask_distribution_values_and_reproducibility():
    torch.manual_seed(5)
    first = keep_mask((400_001,), 0.4)
    torch.manual_seed(5)
    assert torch.equal(first, keep_mask((400_001,), 0.4))
    torch.testing.assert_close(first.unique(), torch.tensor([0.0, 1 / 0.6]))
    kept = (first > 0).double().mean().item()
    assert abs(kept - 0.6) < 4 * (0.24 / 400_001) ** 0.5  # 4 standard deviations
    assert float(first.mean()) == pytest.approx(1.0, abs=0.01)  # inverted dropout keeps the expectation
    assert torch.equal(keep_mask((3, 4), 0.0), torch.ones(3, 4))
    unscaled = keep_mask((1000,), 0.5, torch.float64, scaled=False)
    assert unscaled.dtype == torch.float64 and set(unscaled.unique().tolist()) <= {0.0, 1.0}


def test_dropout_gradient_is_the_mask_and_eval_is_identity():
    x = torch.randn(50, 7, requires_grad=True)
    assert dropout(x, 0.3, training=False) is x
    out = dropout(x, 0.3)
    out.sum().backward()
    torch.testing.assert_close(x.grad, out.detach() / x.detach())


# --------------------------------------------------------------------------------------------------- BCE
def test_bce_with_logits_equals_torch_in_value_and_gradient():
    generator = torch.Generator().manual_seed(0)
    logits = 8 * torch.randn(6, 40, generator=generator)
    logits[0, :4] = torch.tensor([60.0, -60.0, 95.0, -95.0])
    targets = 0.9 * (torch.rand(6, 40, generator=generator) < 0.1) + 0.1 / 40
    ours_input, torch_input = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = bce_with_logits(ours_input, targets)
    reference = F.binary_cross_entropy_with_logits(torch_input, targets)
    (3 * ours).backward()
    (3 * reference).backward()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_input.grad, torch_input.grad, rtol=1e-5, atol=1e-9)


# ----------------------------------------------------------------------------------------------- decision
def _decision_inputs(per_relation: bool, extreme: bool):
    generator = torch.Generator().manual_seed(1)
    scores = [4 * torch.randn(5, 12, generator=generator) for _ in range(3)]
    if extreme:  # beyond float32 sigmoid precision: the log-space recomputation must take over
        scores[0][0, :6] = torch.tensor([90.0, -90.0, 200.0, -200.0, 75.0, -110.0])
        scores[1][0, :6] = torch.tensor([95.0, -85.0, 150.0, -300.0, 80.0, -120.0])
        scores[2][0, :6] = torch.tensor([88.0, -95.0, 120.0, -250.0, 72.0, -100.0])
    log_w = torch.randn(5, 3, generator=generator) if per_relation else torch.randn(3, generator=generator)
    return F.log_softmax(log_w, dim=-1), scores


@pytest.mark.parametrize("per_relation", [False, True])
@pytest.mark.parametrize("extreme", [False, True])
def test_probability_space_decision_equals_log_space_values_and_gradients(per_relation, extreme):
    log_w, scores = _decision_inputs(per_relation, extreme)
    fast_inputs = [t.clone().requires_grad_() for t in (log_w, *scores)]
    exact_inputs = [t.double().requires_grad_() for t in (log_w, *scores)]
    fast = _DecisionLogit.apply(*fast_inputs)
    exact = log_space_logit(exact_inputs[0], exact_inputs[1:])
    weights = torch.linspace(-1, 1, fast.numel()).view_as(fast)
    (fast * weights).sum().backward()
    (exact * weights.double()).sum().backward()
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast.double(), exact.detach(), rtol=1e-5, atol=1e-5)
    for a, b in zip(fast_inputs, exact_inputs):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-6)


def test_decision_keeps_minus_infinity_and_trains_weights():
    fusion = DecisionFusion(["a", "b"])
    scores = {"a": torch.tensor([[2.0, float("-inf")]]), "b": torch.tensor([[-1.0, float("-inf")]])}
    fused = fusion(scores)
    assert fused[0, 1] == float("-inf")
    expected = torch.logit(0.5 * torch.sigmoid(torch.tensor(2.0)) + 0.5 * torch.sigmoid(torch.tensor(-1.0)))
    torch.testing.assert_close(fused[0, 0], expected)
    fused[:, :1].sum().backward()
    assert fusion.weight_logits.grad is not None and torch.isfinite(fusion.weight_logits.grad).all()


# -------------------------------------------------------------------------------------------------- IMF
def _tiny_imf(**overrides):
    from imf_kg.data.kg import EntityFeatures, KnowledgeGraph
    from imf_kg.models.imf import IMF, IMFConfig

    n, r = 30, 3
    heads = torch.arange(n).repeat(r)
    relations = torch.arange(r).repeat_interleave(n)
    triples = torch.stack([heads, relations, (heads + 2 * relations + 1) % n], dim=1)
    kg = KnowledgeGraph.from_id_triples("tiny", [f"e{i}" for i in range(n)], [f"r{i}" for i in range(r)],
                                        {"train": triples[::2], "valid": triples[1::4], "test": triples[3::4]})
    generator = torch.Generator().manual_seed(0)
    kg.features["text"] = EntityFeatures(torch.randn(n, 10, generator=generator), torch.ones(n, dtype=torch.bool), "t")
    torch.manual_seed(0)
    config = IMFConfig(modalities=("structure", "text"), entity_dim=8, relation_dim=6, fusion_rank=12, **overrides)
    return kg, IMF.from_kg(kg, config)


def test_evaluation_fuses_candidates_and_contracts_relations_once():
    from imf_kg.evaluation import evaluate_link_prediction

    kg, model = _tiny_imf()
    fused_rows, contractions = [], []
    model.entity_fusion.register_forward_hook(lambda m, args, out: fused_rows.append(args[0][0].shape[0]))
    for scorer in model.scorers.values():
        original = scorer.context_matrices
        scorer.context_matrices = (lambda f: lambda rel: contractions.append(rel.shape[0]) or f(rel))(original)
    cached = evaluate_link_prediction(model, kg, "test", batch_size=4, progress=False)  # several batches
    assert sum(fused_rows) == kg.num_entities  # every entity fused once per evaluation, not once per batch
    assert contractions == [2 * kg.num_relations] * len(model.branches)  # every relation once per branch
    model.relation_matrix_cache_bytes = 0  # no matrix cache: per-batch contraction of the distinct relations
    uncached = evaluate_link_prediction(model, kg, "test", batch_size=4, progress=False)
    for name in cached:
        assert cached[name].mrr == pytest.approx(uncached[name].mrr, abs=1e-6)


def test_imf_sparse_query_gradient_equals_index_select(monkeypatch):
    from imf_kg.models import imf as imf_module

    heads, relations = torch.tensor([0, 3, 3, 7, 11]), torch.tensor([0, 1, 4, 2, 5])
    targets = torch.full((5, 30), 0.01)
    grads = []
    for rows in (imf_module._query_rows, lambda c, h: c.index_select(0, h)):
        monkeypatch.setattr(imf_module, "_query_rows", rows)
        _, model = _tiny_imf()
        model.train()
        torch.manual_seed(2)
        loss, _ = model.loss(heads, relations, targets)
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert not grads[0]["entity_embeddings.structure.weight"].is_sparse
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], rtol=1e-5, atol=1e-6)
