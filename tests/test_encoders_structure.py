"""Structural encoder: relation-aware GAT layer, training-only negatives, TransE training on Nations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imf_kg.data import load_kg
from imf_kg.encoders.structure import (
    EdgeWeightedSum,
    RelationAwareGATLayer,
    StructureEmbedding,
    StructureEncoder,
    TrainingNegativeSampler,
    fit_structure_encoder,
    frozen_structure_embeddings,
    train_structure_encoder,
    training_graph,
    transe_distance,
)
from imf_kg.errors import ConfigError


@pytest.fixture(scope="module")
def nations():
    return load_kg("nations")


def _naive_layer(layer: RelationAwareGATLayer, x, relations, edge_index, edge_type):
    """The layer written edge by edge: m_e = W [x_t ; x_h ; r_e], softmax over edges into t, weighted sum."""
    weight = torch.cat([layer.target_projection.weight, layer.source_projection.weight,
                        layer.relation_projection.weight], dim=1)  # (H*O, 2*in + rel)
    heads, width = layer.heads, layer.out_dim
    out = torch.zeros(x.shape[0], heads, width)
    for t in range(x.shape[0]):
        into = (edge_index[1] == t).nonzero().flatten()
        if len(into) == 0:
            continue
        messages = torch.stack([
            (weight @ torch.cat([x[t], x[edge_index[0, e]], relations[edge_type[e]]])).view(heads, width)
            for e in into
        ])  # (edges into t, H, O)
        scores = F.leaky_relu((messages * layer.attention).sum(-1), layer.negative_slope)
        out[t] = (torch.softmax(scores, dim=0).unsqueeze(-1) * messages).sum(0)
    return out.reshape(x.shape[0], -1) if layer.concat else out.mean(1)


@pytest.mark.parametrize("concat", [True, False])
def test_gat_layer_matches_edge_by_edge_definition(concat):
    torch.manual_seed(0)
    num_nodes, num_relations = 7, 3
    edge_index = torch.tensor([[0, 1, 2, 3, 3, 4, 5, 1, 0], [1, 1, 1, 2, 0, 3, 3, 5, 6]])
    edge_type = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 1])
    layer = RelationAwareGATLayer(5, 4, 6, heads=3, concat=concat).eval()
    x, relations = torch.randn(num_nodes, 5), torch.randn(num_relations, 4)
    fast = layer(x, relations, edge_index, edge_type)
    expected = _naive_layer(layer, x, relations, edge_index, edge_type)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    assert fast.shape == (num_nodes, 18 if concat else 6)
    assert torch.all(fast[4] == 0)  # node 4 has no incoming edge
    # relation-aware: changing only the relation embeddings changes the messages
    assert not torch.allclose(layer(x, relations + 1.0, edge_index, edge_type), fast)


def test_edge_weighted_sum_values_and_gradients_over_several_chunks():
    torch.manual_seed(0)
    rows, cols = torch.tensor([0, 2, 2, 1, 0, 2, 3]), torch.tensor([1, 0, 4, 4, 3, 2, 0])
    weights = torch.rand(7, 2, dtype=torch.float64, requires_grad=True)
    values = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out = EdgeWeightedSum.apply(weights, values, rows, cols, 4, 2)  # chunks of 2 edges
    expected = torch.zeros(4, 2, 3, dtype=torch.float64).index_add(0, rows, weights.unsqueeze(-1) * values[cols])
    torch.testing.assert_close(out, expected)
    assert torch.autograd.gradcheck(lambda w, v: EdgeWeightedSum.apply(w, v, rows, cols, 4, 3), (weights, values))


def test_gat_layer_gradients_reach_every_parameter():
    torch.manual_seed(0)
    layer = RelationAwareGATLayer(4, 4, 3, heads=2)
    # node 0 has two incoming edges: with one per node the softmax would be constant (no attention gradient)
    edge_index, edge_type = torch.tensor([[0, 1, 2, 1], [1, 2, 0, 0]]), torch.tensor([0, 1, 0, 1])
    layer(torch.randn(3, 4), torch.randn(2, 4), edge_index, edge_type).pow(2).sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_negatives_are_never_training_triples(nations):
    sampler = TrainingNegativeSampler(nations.train, nations.num_entities, nations.num_relations)
    generator = torch.Generator().manual_seed(0)
    positive_index, negatives = sampler.sample(nations.train, per_positive=4, generator=generator)
    train_set = {tuple(t) for t in nations.train.tolist()}
    assert not any(tuple(t) in train_set for t in negatives.tolist())
    assert len(negatives) > 0.9 * 4 * len(nations.train)  # Nations is dense, yet few corruptions are dropped
    positives = nations.train[positive_index]
    changed = (negatives != positives)
    assert torch.all(changed[:, 1] == 0)  # the relation is never corrupted
    assert torch.all(changed[:, 0] ^ changed[:, 2])  # exactly one of head / tail
    assert changed[:, 0].any() and changed[:, 2].any()
    # the filter knows training triples only: valid/test triples (absent from train) are not excluded
    held_out = torch.cat([nations.valid, nations.test])
    held_out = held_out[[tuple(t) not in train_set for t in held_out.tolist()]]
    assert sampler.is_known(nations.train).all() and not sampler.is_known(held_out).any()


def test_sampler_drops_corruptions_that_cannot_avoid_training_triples():
    # entity 0 with relation 0 reaches every entity, so its tail corruptions are all training triples
    train = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 2]])
    sampler = TrainingNegativeSampler(train, num_entities=3, num_relations=1, max_tries=3)
    positive_index, negatives = sampler.sample(train, per_positive=2, generator=torch.Generator().manual_seed(0))
    assert not sampler.is_known(negatives).any()
    assert torch.all(negatives[:, 2] == train[positive_index, 2])  # only head corruptions survive


def _pairwise_accuracy(encoder, kg, triples) -> float:
    """Share of (true triple, corruption) pairs where TransE gives the true triple the lower energy."""
    entity, _ = frozen_structure_embeddings(encoder, kg.train)
    with torch.no_grad():
        relation = encoder.relation_output(F.normalize(encoder.relation_table, dim=1))
    sampler = TrainingNegativeSampler(kg.train, kg.num_entities, kg.num_relations)
    index, negatives = sampler.sample(triples, 8, torch.Generator().manual_seed(1))
    better = transe_distance(entity, relation, triples)[index] < transe_distance(entity, relation, negatives)
    return float(better.float().mean())


def test_training_lowers_loss_and_ranks_true_triples_higher(nations):
    torch.manual_seed(0)
    encoder = StructureEncoder(nations.num_entities, nations.num_relations, dim=16, heads=2, dropout=0.1)
    before = _pairwise_accuracy(encoder, nations, nations.train), _pairwise_accuracy(encoder, nations, nations.valid)
    history = fit_structure_encoder(encoder, nations.train, epochs=12, lr=2e-2, progress=False)
    after = _pairwise_accuracy(encoder, nations, nations.train), _pairwise_accuracy(encoder, nations, nations.valid)
    assert len(history) == 12
    assert sum(history[-3:]) < 0.8 * sum(history[:3])
    assert after[0] > before[0] + 0.1  # training triples (about 0.42 -> 0.62 over seeds 0-2)
    assert after[1] > before[1] + 0.03  # held-out validation triples too (about 0.41 -> 0.50)


def test_mini_batches_train_too(nations):
    torch.manual_seed(0)
    encoder = StructureEncoder(nations.num_entities, nations.num_relations, dim=8, heads=1, dropout=0.0)
    history = fit_structure_encoder(encoder, nations.train, epochs=3, lr=1e-2, batch_size=512, progress=False)
    assert history[-1] < history[0]


def test_train_structure_encoder_returns_frozen_unit_vectors(nations):
    entity, relation = train_structure_encoder(nations, dim=12, heads=2, epochs=2, lr=1e-2, progress=False)
    assert entity.shape == (nations.num_entities, 12) and relation.shape == (nations.num_relations, 12)
    assert not entity.requires_grad and not relation.requires_grad and entity.grad_fn is None
    torch.testing.assert_close(entity.norm(dim=1), torch.ones(nations.num_entities))
    again, _ = train_structure_encoder(nations, dim=12, heads=2, epochs=2, lr=1e-2, progress=False)
    torch.testing.assert_close(again, entity)  # seeded


def test_training_graph_has_both_directions():
    train = torch.tensor([[0, 1, 2], [2, 0, 3]])
    edge_index, edge_type = training_graph(train, num_relations=2)
    assert edge_index.tolist() == [[0, 2, 2, 3], [2, 3, 0, 2]]
    assert edge_type.tolist() == [1, 0, 3, 2]


def test_structure_embedding_table():
    table = StructureEmbedding(5, 3)
    assert table(torch.tensor([0, 4])).shape == (2, 3) and table().shape == (5, 3)
    assert table.weight.requires_grad
    initial = torch.randn(5, 3)
    frozen = StructureEmbedding(5, 3, initial=initial, freeze=True)
    assert torch.equal(frozen(), initial) and not frozen.weight.requires_grad
    with pytest.raises(ConfigError, match=r"expected \(5, 4\)"):
        StructureEmbedding(5, 4, initial=initial)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encoder_runs_on_cuda(nations):
    torch.manual_seed(0)
    encoder = StructureEncoder(nations.num_entities, nations.num_relations, dim=8, heads=2, dropout=0.0)
    cpu_entity, _ = frozen_structure_embeddings(encoder, nations.train, "cpu")
    cuda_entity, _ = frozen_structure_embeddings(encoder, nations.train, "cuda")
    torch.testing.assert_close(cuda_entity, cpu_entity, atol=1e-4, rtol=1e-4)
    history = fit_structure_encoder(encoder, nations.train, epochs=3, lr=1e-2, device="cuda", progress=False)
    assert history[-1] < history[0]
