"""Our filtered evaluator against PyKEEN's RankBasedEvaluator on UMLS, on bit-identical DistMult scores."""

from __future__ import annotations

import pytest
import torch

from imf_kg.evaluation import evaluate_link_prediction
from imf_kg.evaluation.pykeen_reference import (
    compare_with_pykeen,
    distmult_score_fn,
    pykeen_distmult,
    pykeen_filtered_metrics,
    quantised_random_embeddings,
)

pytest.importorskip("pykeen")


@pytest.fixture(scope="module")
def umls():
    from imf_kg.data import load_kg

    return load_kg("umls")  # bundled with PyKEEN: no download


def test_quantised_scores_are_identical_to_pykeen_scores(umls):
    entities, relations = quantised_random_embeddings(umls.num_entities, umls.num_relations, 32, seed=5)
    ours = distmult_score_fn(entities, relations)
    model = pykeen_distmult(umls, entities, relations)
    triples = umls.test[:20]
    with torch.inference_mode():
        theirs_tail = model.score_t(triples[:, :2])
        theirs_head = model.score_h(triples[:, 1:])
    assert torch.equal(ours(triples[:, 0], triples[:, 1]), theirs_tail)
    # head prediction of (?, r, t) is our inverse tail query (t, r + num_relations, ?)
    assert torch.equal(ours(triples[:, 2], triples[:, 1] + umls.num_relations), theirs_head)


@pytest.mark.parametrize("split", ["test", "valid"])
def test_same_metrics_as_pykeen_rank_based_evaluator(umls, split):
    entities, relations = quantised_random_embeddings(umls.num_entities, umls.num_relations, 32, seed=1)
    ours = evaluate_link_prediction(
        distmult_score_fn(entities, relations), umls, split, batch_size=64, progress=False, return_ranks=True
    )["model"]
    reference = pykeen_filtered_metrics(umls, split, entities, relations, batch_size=128)
    assert compare_with_pykeen(ours, reference, tolerance=1e-6) == []
    for rank_type in ("realistic", "optimistic", "pessimistic"):
        for side in ("both", "head", "tail"):
            for metric in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
                theirs = reference.values[rank_type][side][metric]
                assert ours.get(metric, side, rank_type) == pytest.approx(theirs, rel=1e-6, abs=1e-6)
    # the quantised scores tie often enough that the three rank types differ
    assert ours.get("mr", rank_type="optimistic") < ours.get("mr", rank_type="pessimistic")
    assert len(reference.ranks[("head", "realistic")]) == len(umls.split(split))


def test_comparison_detects_a_different_filter(umls):
    """Guard against a vacuous comparison: unfiltered-vs-filtered must be reported as different."""
    entities, relations = quantised_random_embeddings(umls.num_entities, umls.num_relations, 32, seed=1)
    score = distmult_score_fn(entities, relations)
    reference = pykeen_filtered_metrics(umls, "test", entities, relations, max_triples=100)
    n = len(umls.test)
    positions = torch.cat([torch.arange(100), n + torch.arange(100)])
    ours = evaluate_link_prediction(score, umls, "test", progress=False, return_ranks=True, restrict_to=positions)
    assert compare_with_pykeen(ours["model"], reference) == []
    unfiltered = evaluate_link_prediction(
        lambda h, r: score(h, r), _without_filter(umls), "test", progress=False, return_ranks=True,
        restrict_to=positions,
    )
    assert compare_with_pykeen(unfiltered["model"], reference) != []


def _without_filter(kg):
    """A copy of ``kg`` whose filter only knows the test triples themselves."""
    import copy

    from imf_kg.data.filter_index import FilterIndex

    clone = copy.copy(kg)
    clone.__dict__["filter_index"] = FilterIndex(
        kg.with_inverse(kg.test), kg.num_entities, kg.num_relations_with_inverse
    )
    return clone
