"""The 1-N link-prediction task: queries, batches, smoothed labels, validation flattening."""

from __future__ import annotations

import pytest
import torch

import imf_kg.evaluation
from imf_kg.data import KnowledgeGraph, load_kg
from imf_kg.errors import ConfigError
from imf_kg.models.distmult import DistMult
from imf_kg.training import OneToNTask, flatten_link_prediction_metrics, seed_everything, smooth_labels


@pytest.fixture(scope="module")
def nations():
    return load_kg("nations")


@pytest.fixture()
def toy():
    # 0 -r0-> 1, 0 -r0-> 2, 1 -r1-> 2; 4 entities (3 never appears in train), 2 relations
    return KnowledgeGraph.from_id_triples(
        "toy", ["a", "b", "c", "d"], ["r0", "r1"],
        {"train": torch.tensor([[0, 0, 1], [0, 0, 2], [1, 1, 2]]), "valid": torch.tensor([[0, 1, 2]])},
    )


def naive_labels(kg, heads, relations):
    """Per-query loop over the training triples with inverses: the reference for the vectorised labels."""
    triples = kg.with_inverse(kg.train).tolist()
    rows = torch.zeros(len(heads), kg.num_entities)
    for i, (h, r) in enumerate(zip(heads.tolist(), relations.tolist())):
        for th, tr, tt in triples:
            if th == h and tr == r:
                rows[i, tt] = 1.0
    return rows


def test_queries_are_distinct_training_pairs_with_inverses(toy):
    task = OneToNTask(toy, batch_size=2)
    pairs = {tuple(q) for q in task.queries.tolist()}
    # (0, r0), (1, r1) forward; (1, r0^-1), (2, r0^-1), (2, r1^-1) inverse (r^-1 = r + 2)
    assert pairs == {(0, 0), (1, 1), (1, 2), (2, 2), (2, 3)}
    assert task.num_queries == 5 and task.num_batches() == 3


def test_targets_match_a_naive_loop_for_both_smoothing_forms(nations):
    rows = torch.randperm(900, generator=torch.Generator().manual_seed(1))[:50]
    task = OneToNTask(nations, label_smoothing=0.0)
    queries = task.queries[rows]
    hard = naive_labels(nations, queries[:, 0], queries[:, 1])
    assert torch.equal(task.targets(rows, "cpu"), hard)
    assert hard.sum() > len(rows)  # some queries have several answers

    n = nations.num_entities
    standard = OneToNTask(nations, label_smoothing=0.1).targets(rows, "cpu")
    assert torch.allclose(standard, 0.9 * hard + 0.1 / n)
    tucker = OneToNTask(nations, label_smoothing=0.1, smoothing_form="tucker").targets(rows, "cpu")
    assert torch.allclose(tucker, 0.9 * hard + 1.0 / n)
    assert torch.allclose(standard[hard == 1], torch.tensor(0.9 + 0.1 / n))
    assert torch.allclose(tucker[hard == 0], torch.tensor(1.0 / n))


def test_smooth_labels_rejects_unknown_form():
    with pytest.raises(ConfigError, match="smoothing_form"):
        smooth_labels(torch.zeros(1, 3), 0.1, "ls")


def test_batches_cover_every_query_once_in_a_generator_dependent_order(nations):
    task = OneToNTask(nations, batch_size=100)
    batches = list(task.train_batches(1, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches[:-1]] == [100] * (len(batches) - 1)
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(task.num_queries))
    again = torch.cat(list(task.train_batches(1, torch.Generator().manual_seed(0))))
    other = torch.cat(list(task.train_batches(1, torch.Generator().manual_seed(1))))
    assert torch.equal(torch.cat(batches), again) and not torch.equal(again, other)
    assert task.batch_size_of(batches[0]) == 100


def test_training_step_calls_the_model_loss_with_smoothed_targets(toy):
    model = DistMult.from_kg(toy, dim=4, dropout=0.0)
    task = OneToNTask(toy, model, label_smoothing=0.2)
    rows = torch.tensor([0, 4])
    loss, logs = task.training_step(model, rows)
    queries = task.queries[rows]
    expected, _ = model.loss(queries[:, 0], queries[:, 1], 0.8 * naive_labels(toy, queries[:, 0], queries[:, 1]) + 0.05)
    assert torch.allclose(loss, expected) and "bce" in logs
    loss.backward()
    assert model.entity.weight.grad is not None


def test_constructor_checks_arguments(toy):
    with pytest.raises(ConfigError, match="label_smoothing"):
        OneToNTask(toy, label_smoothing=1.0)
    with pytest.raises(ConfigError, match="eval_split"):
        OneToNTask(toy, eval_split="dev")
    with pytest.raises(ConfigError, match="scores 5 entities"):
        OneToNTask(toy, DistMult(5, 4))


def ranking(mrr):
    return {"realistic": {"mrr": mrr, "hits@10": mrr + 0.1}, "optimistic": {"mrr": 1.0}}


def test_single_output_metrics_are_unprefixed():
    result = {"both": ranking(0.5), "head": ranking(0.4), "tail": ranking(0.6)}
    assert flatten_link_prediction_metrics(result) == {"mrr": 0.5, "hits@10": 0.6}
    assert flatten_link_prediction_metrics({"model": result}) == {"mrr": 0.5, "hits@10": 0.6}


def test_rank_metrics_objects_are_flattened():
    RankMetrics = getattr(imf_kg.evaluation, "RankMetrics", None) or pytest.skip("imf_kg.evaluation not written yet")
    ranks = {"realistic": torch.tensor([1.0, 2.0, 4.0, 1.0]), "optimistic": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    is_head = torch.tensor([False, False, True, True])
    result = {"model": RankMetrics.from_ranks(ranks, is_head)}
    flat = flatten_link_prediction_metrics(result)
    assert flat["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 1) / 4) and flat["hits@1"] == 0.5
    assert flatten_link_prediction_metrics(result, direction="head")["mrr"] == pytest.approx(0.625)
    two = {"structure": result["model"], "fused": RankMetrics.from_ranks({"realistic": torch.ones(4)}, is_head)}
    flat = flatten_link_prediction_metrics(two)
    assert flat["fused/mrr"] == 1.0 and flat["mrr"] == 1.0 and flat["structure/hits@1"] == 0.5


def test_multi_output_metrics_are_prefixed_with_a_primary():
    result = {"structure": {"both": ranking(0.2)}, "fused": {"both": ranking(0.4)}, "config": {"n": 3}}
    flat = flatten_link_prediction_metrics(result)
    assert flat["structure/mrr"] == 0.2 and flat["fused/mrr"] == 0.4 and flat["mrr"] == 0.4
    assert flatten_link_prediction_metrics(result, primary_output="structure")["mrr"] == 0.2
    with pytest.raises(ConfigError, match="primary_output"):
        flatten_link_prediction_metrics(result, primary_output="visual")


def test_validate_calls_the_evaluation_module(toy, monkeypatch):
    calls = []

    def fake_evaluate(model, kg, split, batch_size, **options):
        calls.append((kg.name, split, batch_size))
        return {"both": ranking(0.7)}

    monkeypatch.setattr(imf_kg.evaluation, "evaluate_link_prediction", fake_evaluate, raising=False)
    task = OneToNTask(toy, eval_split="test", eval_batch_size=17)
    assert task.validate(DistMult.from_kg(toy, dim=4)) == {"mrr": 0.7, "hits@10": pytest.approx(0.8)}
    assert calls == [("toy", "test", 17)]


def test_validate_with_the_real_evaluation_matches_a_direct_computation(nations):
    if not hasattr(imf_kg.evaluation, "evaluate_link_prediction"):
        pytest.skip("imf_kg.evaluation.evaluate_link_prediction is not written yet")
    seed_everything(0)
    model = DistMult.from_kg(nations, dim=8).eval()
    with torch.no_grad():
        metrics = OneToNTask(nations, model).validate(model)
        queries = nations.queries("valid")
        scores = model.score_tails(queries[:, 0], queries[:, 1])
    target = scores.gather(1, queries[:, 2:3])
    known = nations.filter_index.dense(queries[:, 0], queries[:, 1])
    known[torch.arange(len(queries)), queries[:, 2]] = False
    scores = scores.masked_fill(known, float("-inf"))
    realistic = (scores > target).sum(1) + ((scores == target).sum(1) - 1) / 2 + 1  # ties share the mean rank
    assert metrics["mrr"] == pytest.approx(float((1 / realistic.double()).mean()), rel=1e-6)
    assert {"mr", "hits@1", "hits@3", "hits@10"} <= set(metrics)
