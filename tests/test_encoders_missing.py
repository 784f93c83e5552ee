"""MaskedModalityEmbedding: one learned vector for every item without the modality."""

from __future__ import annotations

import pytest
import torch

from imf_kg.encoders.missing import MaskedModalityEmbedding


@pytest.fixture
def table():
    torch.manual_seed(0)
    values = torch.randn(6, 4)
    values[[1, 4]] = 0.0
    mask = torch.tensor([True, False, True, True, False, True])
    return values, mask


def test_missing_rows_get_the_learned_vector_and_present_rows_are_unchanged(table):
    values, mask = table
    module = MaskedModalityEmbedding(values, mask)
    embeddings, present = module(torch.tensor([4, 0, 1, 5]))
    assert present.tolist() == [False, True, False, True]
    assert torch.equal(embeddings[0], module.missing_vector.detach()) and torch.equal(embeddings[2], embeddings[0])
    assert torch.equal(embeddings[1], values[0]) and torch.equal(embeddings[3], values[5])
    # one vector, not the mean of the present rows (the reference code's fill)
    assert not torch.allclose(embeddings[0], values[mask].mean(0))
    everything, all_mask = module()
    assert everything.shape == (6, 4) and torch.equal(all_mask, mask)


def test_gradient_reaches_the_missing_vector_only_through_missing_rows(table):
    values, mask = table
    module = MaskedModalityEmbedding(values, mask)
    embeddings, _ = module(torch.tensor([0, 2]))  # present rows only
    embeddings.sum().backward()
    assert module.missing_vector.grad is None or torch.all(module.missing_vector.grad == 0)
    module.zero_grad()
    embeddings, _ = module(torch.tensor([1, 4, 0]))
    (embeddings * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(module.missing_vector.grad, 2 * torch.arange(4.0))  # two missing rows
    assert not module.values.requires_grad  # a frozen feature table by default


def test_trainable_table_and_projection(table):
    values, mask = table
    module = MaskedModalityEmbedding(values, mask, out_dim=3, trainable=True)
    embeddings, present = module(torch.tensor([0, 1]))
    assert embeddings.shape == (2, 3) and module.out_dim == 3
    embeddings.sum().backward()
    assert module.values.grad[0].abs().sum() > 0  # present row: fine-tuned
    assert torch.all(module.values.grad[1] == 0)  # missing row: its (zero) features are never used
    assert module.missing_vector.grad.abs().sum() > 0  # through the projection
    assert module.projection.weight.grad is not None
    values[0] += 100.0  # the module holds its own copy
    assert not torch.allclose(module.values[0], values[0])


def test_state_dict_round_trip_and_bad_shapes(table):
    values, mask = table
    module = MaskedModalityEmbedding(values, mask, out_dim=2)
    clone = MaskedModalityEmbedding(torch.zeros(6, 4), torch.ones(6, dtype=torch.bool), out_dim=2)
    clone.load_state_dict(module.state_dict())
    ids = torch.arange(6)
    torch.testing.assert_close(clone(ids)[0], module(ids)[0])
    assert torch.equal(clone.mask, mask)
    with pytest.raises(ValueError, match="mask"):
        MaskedModalityEmbedding(values, mask[:3])
