"""ContextualRelationScorer: hand-computed scores, both contraction orders, FLOPs and memory."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from imf_kg.scorers import ORDERS, ContextualRelationScorer, distinct_relations
from imf_kg.scorers.contextual import _GroupedVectorMatrix

D, D_R = 3, 2


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core machine (20x faster)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _scorer(d=D, d_r=D_R, dropouts=(0.3, 0.4, 0.5), **kw):
    """A scorer in eval mode with random (non-identity) batch-norm statistics and affine parameters."""
    torch.manual_seed(0)
    scorer = ContextualRelationScorer(d, d_r, dropouts, **kw).double()
    with torch.no_grad():
        for norm in (scorer.input_norm, scorer.output_norm):
            if isinstance(norm, torch.nn.BatchNorm1d):
                norm.running_mean.copy_(torch.randn(d))
                norm.running_var.copy_(torch.rand(d) + 0.5)
                norm.weight.copy_(torch.randn(d))
                norm.bias.copy_(torch.randn(d))
    return scorer.eval()


def _batch(batch=6, num_relations=3, n=5, d=D, d_r=D_R, seed=1):
    generator = torch.Generator().manual_seed(seed)
    entities = torch.randn(batch, d, generator=generator, dtype=torch.float64)
    table = torch.randn(num_relations, d_r, generator=generator, dtype=torch.float64)
    relation_ids = torch.randint(0, num_relations, (batch,), generator=generator)
    candidates = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return entities, table, relation_ids, candidates


def _float_batch(**kw):
    return tuple(t.float() if t.is_floating_point() else t for t in _batch(**kw))


def _bn(norm, x):
    return (x - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias


def _scores_by_hand(scorer, entities, table, relation_ids, candidates):
    """Explicit loops over the full core: s[b, n] = sum_j BN1(sum_i x_i sum_k rho_k W[k, i, j])_j C[n, j]."""
    core = scorer.core.detach()
    batch, n = entities.shape[0], candidates.shape[0]
    out = torch.zeros(batch, n, dtype=torch.float64)
    for b in range(batch):
        x = _bn(scorer.input_norm, entities[b])
        rho = table[relation_ids[b]]
        context = torch.zeros(D, dtype=torch.float64)
        for k, i, j in itertools.product(range(D_R), range(D), range(D)):
            context[j] += x[i] * rho[k] * core[k, i, j]
        context = _bn(scorer.output_norm, context)
        for c in range(n):
            out[b, c] = sum(context[j] * candidates[c, j] for j in range(D))
    return out


@pytest.mark.parametrize("order", ORDERS)
def test_scores_equal_explicit_loops_over_the_full_core(order):
    scorer = _scorer()
    entities, table, relation_ids, candidates = _batch()
    unique, index = distinct_relations(relation_ids)
    with torch.no_grad():
        got = scorer(entities, table[unique], candidates, index, order=order)
        per_query = scorer(entities, table[relation_ids], candidates, order=order)  # one row per query
    expected = _scores_by_hand(scorer, entities, table, relation_ids, candidates)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(per_query, expected)
    by_einsum = torch.einsum("bi,bk,kij->bj", entities, table[relation_ids], scorer.core)  # no batch norm
    plain = _scorer(batch_norm=False)
    with torch.no_grad():
        torch.testing.assert_close(plain(entities, table[unique], candidates, index, order=order),
                                   by_einsum.detach() @ candidates.t())


def test_orders_agree_on_values_and_gradients():
    scorer = _scorer(d=5, d_r=4)
    entities, table, relation_ids, candidates = _batch(batch=9, num_relations=3, n=7, d=5, d_r=4)
    results = {}
    for order in ORDERS:
        scorer.zero_grad()
        ent = entities.clone().requires_grad_()
        rel = table.clone().requires_grad_()
        unique, index = distinct_relations(relation_ids)
        scores = scorer(ent, rel[unique], candidates, index, order=order)
        (scores * torch.linspace(-1, 1, scores.numel(), dtype=scores.dtype).view_as(scores)).sum().backward()
        results[order] = (scores.detach(), ent.grad, rel.grad, scorer.core.grad.clone())
    for a, b in zip(results["relation_first"], results["entity_first"]):
        torch.testing.assert_close(a, b)


def test_grouped_vector_matrix_gradcheck_with_chunks_smaller_than_the_batch():
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    matrices = torch.randn(3, 3, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 2, 2, 1, 0, 2, 1])
    assert torch.autograd.gradcheck(lambda a, m: _GroupedVectorMatrix.apply(a, m, index, 2), (x, matrices))
    expected = torch.stack([x[b] @ matrices[index[b]] for b in range(7)])
    torch.testing.assert_close(_GroupedVectorMatrix.apply(x, matrices, index, 3), expected)


def test_gradients_reach_every_parameter_in_training():
    scorer = ContextualRelationScorer(6, 4).train()
    entities, table, relation_ids, candidates = _float_batch(batch=8, d=6, d_r=4, n=10)
    unique, index = distinct_relations(relation_ids)
    scorer(entities, table[unique], candidates, index).sum().backward()
    for name, p in scorer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_order_choice_by_flops_and_hidden_dropout():
    scorer = ContextualRelationScorer(8, 4)
    scorer.eval()
    assert scorer.choose_order(batch=16, num_unique_relations=2) == "relation_first"
    assert scorer.choose_order(batch=16, num_unique_relations=16) == "entity_first"  # d_r < d, all distinct
    scorer.train()  # the hidden dropout needs M_r itself
    assert scorer.choose_order(batch=16, num_unique_relations=16) == "relation_first"
    entities, table, relation_ids, candidates = _float_batch(batch=4, d=8, d_r=4)
    with pytest.raises(ValueError):
        scorer.contextualize(entities, table[relation_ids], order="entity_first")
    no_hidden = ContextualRelationScorer(8, 4, dropouts=(0.0, 0.0, 0.0)).train()
    assert no_hidden.choose_order(batch=16, num_unique_relations=16) == "entity_first"
    with torch.no_grad():  # training-mode batch norm uses batch statistics: the same for both orders
        a = no_hidden.contextualize(entities, table[relation_ids], order="relation_first")
        b = no_hidden.contextualize(entities, table[relation_ids], order="entity_first")
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_hidden_dropout_has_the_reference_marginal():
    """Queries sharing a relation share the M_r mask, so a dropped context entry is dropped for all of them."""
    scorer = ContextualRelationScorer(4, 3, dropouts=(0.0, 0.5, 0.0), batch_norm=False).train()
    entities = torch.randn(1, 4).repeat(2, 1)
    relations = torch.randn(1, 3)
    torch.manual_seed(0)
    contexts = scorer.contextualize(entities, relations, torch.tensor([0, 0]))
    torch.testing.assert_close(contexts[0], contexts[1])
    draws = torch.stack([scorer.contextualize(entities[:1], relations, torch.tensor([0]))[0] for _ in range(2000)])
    exact = (entities[:1] @ (relations @ scorer.core.reshape(3, 16)).reshape(4, 4))[0]
    torch.testing.assert_close(draws.mean(0).detach(), exact.detach(), rtol=0.1, atol=0.15)


@pytest.mark.parametrize("order", ORDERS)
def test_flops_match_flop_counter_and_docstring_formula(order):
    d, d_r, batch, n = 8, 6, 12, 20
    scorer = ContextualRelationScorer(d, d_r).eval()
    entities = torch.randn(batch, d)
    relation_ids = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 2, 3])
    table = torch.randn(5, d_r)
    unique, index = distinct_relations(relation_ids)
    u = len(unique)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            scorer(entities, table[unique], torch.randn(n, d), index, order=order)
    counted = counter.get_total_flops()
    assert counted == scorer.flops(batch, u, n)[order]
    per_query = {  # the formulas stated in the module docstring
        "relation_first": 2 * d_r * d * d * u / batch + 2 * d * d + 2 * n * d,
        "entity_first": 2 * d_r * d * d + 2 * d_r * d + 2 * n * d,
    }[order]
    assert counted / batch == pytest.approx(per_query)


def test_relation_first_never_materialises_a_batch_of_context_matrices():
    d, batch = 16, 64
    scorer = ContextualRelationScorer(d, d, max_gathered_elements=4 * d * d).train()  # chunks of 4 queries
    entities = torch.randn(batch, d, requires_grad=True)
    relation_ids = torch.randint(0, 8, (batch,))
    table = torch.randn(8, d, requires_grad=True)
    unique, index = distinct_relations(relation_ids)

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    LargestOutput.largest = max(LargestOutput.largest, t.numel())
            return out

    with LargestOutput():
        scorer(entities, table[unique], torch.randn(10, d), index).sum().backward()
    assert LargestOutput.largest < batch * d * d
    assert LargestOutput.largest <= max(len(unique), 4) * d * d * 2  # the U matrices (and the core copy)


def test_single_query_batch_in_training_uses_running_statistics():
    scorer = ContextualRelationScorer(4, 3).train()
    out = scorer(torch.randn(1, 4), torch.randn(1, 3), torch.randn(5, 4))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ContextualRelationScorer(4, 3, dropouts=(0.1, 0.2))
    with pytest.raises(ValueError):
        ContextualRelationScorer(4, 3, core_init="zeros")
    scorer = ContextualRelationScorer(4, 3).eval()
    with pytest.raises(ValueError):
        scorer.contextualize(torch.randn(3, 4), torch.randn(2, 3))  # no index: one relation row per query
    with pytest.raises(ValueError):
        scorer.contextualize(torch.randn(3, 4), torch.randn(3, 3), order="diagonal")


def test_core_initialisations():
    tucker = ContextualRelationScorer(16, 8, core_init="tucker")
    xavier = ContextualRelationScorer(16, 8, core_init="xavier")
    assert tucker.core.abs().max() <= 1 and tucker.core.abs().max() > 0.9
    assert xavier.core.abs().max() < 0.2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("order", ORDERS)
def test_cpu_and_cuda_agree(order):
    scorer = _scorer(d=5, d_r=4).float()
    entities, table, relation_ids, candidates = _float_batch(batch=9, d=5, d_r=4, n=7)
    unique, index = distinct_relations(relation_ids)
    with torch.no_grad():
        cpu = scorer(entities, table[unique], candidates, index, order=order)
        scorer.cuda()
        gpu = scorer(entities.cuda(), table[unique].cuda(), candidates.cuda(), index.cuda(), order=order)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
