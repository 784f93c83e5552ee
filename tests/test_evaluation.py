"""Filtered ranking and metrics: hand-computed ranks, invariances and the evaluation pass."""

from __future__ import annotations

import math

import pytest
import torch

from imf_kg.data.kg import KnowledgeGraph
from imf_kg.evaluation import (
    RankMetrics,
    batch_size_for_budget,
    evaluate_link_prediction,
    filtered_ranks,
    metrics_table,
    rank_metrics,
)
from imf_kg.evaluation.ranking import RankingWorkspace
from imf_kg.models.base import LinkPredictor

NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------------------------------ by hand
def test_ranks_by_hand_with_ties_filter_and_nan():
    scores = torch.tensor(
        [
            [0.5, 0.9, 0.5, 0.1, 0.9, 0.2],  # target 0.5; the 0.9 in column 1 is filtered
            [NAN, 0.3, NAN, -INF, 0.7, 0.1],  # NaN target: last of its 5 candidates; 0.7 filtered
            [0.2, NAN, 0.8, 0.2, NAN, 0.2],  # NaN competitors never beat the target
        ]
    )
    targets = torch.tensor([0, 0, 5])
    filter_rows = torch.tensor([0, 0, 1])
    filter_cols = torch.tensor([1, 0, 4])  # row 0's own target is in the filter and must stay a candidate
    ranks = filtered_ranks(scores, targets, filter_rows, filter_cols)
    # row 0: better {col 4}; ties {col 2}            -> optimistic 2, pessimistic 3
    # row 1: candidates {0, 1, 2, 3, 5}; a NaN target is worst in every rank type -> 5, 5
    # row 2: better {0.8}; ties {col 0, col 3}       -> 2, 4
    assert ranks["optimistic"].tolist() == [2, 5, 2]
    assert ranks["pessimistic"].tolist() == [3, 5, 4]
    assert ranks["realistic"].tolist() == [2.5, 5.0, 3.0]
    only_optimistic = filtered_ranks(scores, targets, filter_rows, filter_cols, rank_types=("optimistic",))
    assert only_optimistic["optimistic"].tolist() == [2, 5, 2]
    assert ranks["optimistic"].dtype == torch.long and ranks["realistic"].dtype == torch.float64


def test_unfiltered_and_duplicate_filter_entries():
    scores = torch.tensor([[3.0, 1.0, 2.0, 3.0]])
    raw = filtered_ranks(scores, torch.tensor([2]))
    assert raw["optimistic"].tolist() == [3] and raw["pessimistic"].tolist() == [3]
    # a duplicated filter pair is removed once, not twice
    dup = filtered_ranks(scores, torch.tensor([2]), torch.tensor([0, 0, 0]), torch.tensor([0, 0, 3]))
    assert dup["optimistic"].tolist() == [1] and dup["pessimistic"].tolist() == [1]


def test_only_requested_rank_types_and_bad_input():
    scores = torch.tensor([[0.1, 0.2]])
    assert set(filtered_ranks(scores, torch.tensor([0]), rank_types=("pessimistic",))) == {"pessimistic"}
    with pytest.raises(ValueError, match="unknown rank type"):
        filtered_ranks(scores, torch.tensor([0]), rank_types=("median",))
    with pytest.raises(ValueError, match="targets"):
        filtered_ranks(scores, torch.tensor([0, 1]))


def naive_ranks(scores: torch.Tensor, targets: torch.Tensor, known: list[set[int]]) -> dict[str, list]:
    """Obviously-correct reference: Python loops, filtered entries removed, NaN candidates as -inf, a NaN
    target last."""
    out = {"optimistic": [], "pessimistic": [], "realistic": []}
    for row, target, answers in zip(scores.tolist(), targets.tolist(), known):
        candidates = [-INF if math.isnan(v) else v for j, v in enumerate(row) if j == target or j not in answers]
        t = row[target]
        if math.isnan(t):
            optimistic = pessimistic = len(candidates)
        else:
            optimistic = 1 + sum(v > t for v in candidates)
            pessimistic = sum(v >= t for v in candidates)
        out["optimistic"].append(optimistic)
        out["pessimistic"].append(pessimistic)
        out["realistic"].append((optimistic + pessimistic) / 2)
    return out


@pytest.mark.parametrize("use_numpy", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_matches_naive_reference_on_random_ties(use_numpy, dtype):
    generator = torch.Generator().manual_seed(3)
    batch, num_entities = 37, 2100  # wider than one counting block of the workspace
    scores = torch.randint(0, 6, (batch, num_entities), generator=generator).to(dtype)  # many ties
    scores[torch.rand(batch, num_entities, generator=generator) < 0.02] = NAN
    scores[5, :] = NAN
    targets = torch.randint(0, num_entities, (batch,), generator=generator)
    scores[6, targets[6]] = -INF  # ties with the NaN and -inf candidates of its row
    scores[7, targets[7]] = NAN  # a NaN target among finite candidates
    filter_mask = torch.rand(batch, num_entities, generator=generator) < 0.1
    filter_mask[torch.arange(batch), targets] = True
    rows, cols = filter_mask.nonzero().unbind(1)
    workspace = RankingWorkspace(batch, num_entities, "cpu", use_numpy=use_numpy)
    ours = filtered_ranks(scores, targets, rows, cols, assume_unique=True, workspace=workspace)
    expected = naive_ranks(scores.double(), targets, [set(torch.nonzero(m).flatten().tolist()) for m in filter_mask])
    for rank_type, values in expected.items():
        assert ours[rank_type].tolist() == values, rank_type
    assert (ours["optimistic"] <= ours["realistic"]).all() and (ours["realistic"] <= ours["pessimistic"]).all()
    assert (ours["optimistic"] < ours["pessimistic"]).any()  # the ties were exercised


# ------------------------------------------------------------------------------------------ metrics
def test_rank_metrics_values_and_sides():
    assert rank_metrics(torch.tensor([1.0, 2.0, 4.0, 20.0])) == pytest.approx(
        {"mrr": (1 + 0.5 + 0.25 + 0.05) / 4, "mr": 6.75, "hits@1": 0.25, "hits@3": 0.5, "hits@10": 0.75}
    )
    ranks = {"realistic": torch.tensor([1.0, 3.5, 2.0, 11.0])}
    metrics = RankMetrics.from_ranks(ranks, is_head=torch.tensor([False, False, True, True]))
    assert metrics.num_queries == {"both": 4, "head": 2, "tail": 2}
    assert metrics.get("hits@3", "tail") == 0.5  # 3.5 is not within the top 3
    assert metrics.get("mr", "head") == 6.5
    assert metrics.mrr == pytest.approx((1 + 1 / 3.5 + 0.5 + 1 / 11) / 4)
    table = metrics.to_markdown()
    assert table.splitlines()[0].startswith("| side | queries | MRR | MR | Hits@1")
    assert "| head | 2 |" in table
    as_dict = metrics.to_dict()
    assert as_dict["realistic"]["tail"]["mr"] == 2.25 and as_dict["num_queries"]["both"] == 4
    with pytest.raises(KeyError, match="pessimistic"):
        metrics.get("mrr", rank_type="pessimistic")


# ------------------------------------------------------------------------------------- evaluation pass
@pytest.fixture(scope="module")
def tiny_kg() -> KnowledgeGraph:
    generator = torch.Generator().manual_seed(0)
    num_entities, num_relations = 30, 4

    def triples(n):
        return torch.stack(
            [
                torch.randint(0, num_entities, (n,), generator=generator),
                torch.randint(0, num_relations, (n,), generator=generator),
                torch.randint(0, num_entities, (n,), generator=generator),
            ],
            dim=1,
        )

    return KnowledgeGraph.from_id_triples(
        "tiny",
        [f"e{i}" for i in range(num_entities)],
        [f"r{i}" for i in range(num_relations)],
        {"train": triples(300), "valid": triples(25), "test": triples(25)},
        unseen="keep",
    )


def table_score_fn(kg, seed=0, ties=False):
    """Scores from a fixed random table indexed by (entity, relation incl. inverse)."""
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(kg.num_entities, kg.num_relations_with_inverse, kg.num_entities, generator=generator)
    if ties:
        table = table.round()

    def score(heads, relations):
        return table[heads, relations]

    return score


def test_evaluator_matches_naive_filtered_ranks(tiny_kg):
    score = table_score_fn(tiny_kg, ties=True)
    result = evaluate_link_prediction(score, tiny_kg, "test", batch_size=8, progress=False, return_ranks=True)
    metrics = result["model"]
    queries = tiny_kg.queries("test")
    known: dict[tuple[int, int], set[int]] = {}
    for h, r, t in tiny_kg.with_inverse(torch.cat([tiny_kg.train, tiny_kg.valid, tiny_kg.test])).tolist():
        known.setdefault((h, r), set()).add(t)
    expected = naive_ranks(
        score(queries[:, 0], queries[:, 1]), queries[:, 2], [known[(h, r)] for h, r, _ in queries.tolist()]
    )
    for rank_type, values in expected.items():
        assert metrics.ranks[rank_type].tolist() == values
    n = len(tiny_kg.test)
    assert metrics.num_queries == {"both": 2 * n, "head": n, "tail": n}
    assert metrics.is_head.tolist() == [False] * n + [True] * n
    # equal halves: "both" pools head and tail
    assert metrics.mrr == pytest.approx((metrics.get("mrr", "head") + metrics.get("mrr", "tail")) / 2)
    assert metrics.get("mr", rank_type="optimistic") < metrics.get("mr", rank_type="pessimistic")


def test_batch_size_and_memory_budget_invariance(tiny_kg):
    score = table_score_fn(tiny_kg, seed=1, ties=True)
    runs = [
        evaluate_link_prediction(score, tiny_kg, "valid", batch_size=b, progress=False, return_ranks=True)["model"]
        for b in (1, 7, 1000)
    ]
    runs.append(
        evaluate_link_prediction(
            score, tiny_kg, "valid", max_score_bytes=3 * 30 * 5, progress=False, return_ranks=True
        )["model"]
    )
    for other in runs[1:]:
        assert other.to_dict() == runs[0].to_dict()
        for rank_type in runs[0].ranks:
            assert torch.equal(other.ranks[rank_type], runs[0].ranks[rank_type])


def test_memory_budget_sets_batch_size_for_every_output(tiny_kg):
    seen_batches = []
    base = table_score_fn(tiny_kg)

    def three_outputs(heads, relations):
        seen_batches.append(len(heads))
        s = base(heads, relations)
        return {"a": s, "b": s * 2, "c": -s}

    budget = 2000
    per_query = tiny_kg.num_entities * (3 * 4 + 1)
    assert batch_size_for_budget(budget, tiny_kg.num_entities, num_outputs=3) == budget // per_query
    evaluate_link_prediction(three_outputs, tiny_kg, "test", max_score_bytes=budget, progress=False)
    assert seen_batches[0] == 1  # the probe that reveals the number of outputs
    assert max(seen_batches) * per_query <= budget and max(seen_batches) == budget // per_query
    assert sum(seen_batches) == 2 * len(tiny_kg.test)
    assert batch_size_for_budget(1, 10**6) == 1  # never zero
    seen_batches.clear()
    evaluate_link_prediction(three_outputs, tiny_kg, "test", batch_size=2, max_score_bytes=budget, progress=False)
    assert max(seen_batches) == 2  # the smaller of the two limits


def test_dict_outputs_are_ranked_separately(tiny_kg):
    base = table_score_fn(tiny_kg, seed=2)
    both = evaluate_link_prediction(
        lambda h, r: {"fused": base(h, r), "reversed": -base(h, r)}, tiny_kg, "test", batch_size=5, progress=False
    )
    alone = evaluate_link_prediction(lambda h, r: -base(h, r), tiny_kg, "test", batch_size=5, progress=False)
    assert set(both) == {"fused", "reversed"}
    assert both["reversed"].to_dict() == alone["model"].to_dict()
    assert both["fused"].mrr != both["reversed"].mrr
    table = metrics_table(both)
    assert "| fused |" in table and "| reversed |" in table


def test_restrict_to_and_head_tail_split(tiny_kg):
    score = table_score_fn(tiny_kg, seed=4)
    n = len(tiny_kg.test)
    full = evaluate_link_prediction(score, tiny_kg, "test", progress=False, return_ranks=True)["model"]
    tails = evaluate_link_prediction(score, tiny_kg, "test", progress=False, restrict_to=torch.arange(n))["model"]
    assert tails.num_queries == {"both": n, "head": 0, "tail": n}
    assert tails.get("mrr", "both") == pytest.approx(full.get("mrr", "tail"))
    with pytest.raises(KeyError):
        tails.get("mrr", "head")
    mask = torch.zeros(2 * n, dtype=torch.bool)
    mask[[0, n + 3]] = True
    some = evaluate_link_prediction(score, tiny_kg, "test", progress=False, restrict_to=mask, return_ranks=True)
    assert some["model"].query_index.tolist() == [0, n + 3]
    assert some["model"].ranks["realistic"].tolist() == full.ranks["realistic"][[0, n + 3]].tolist()
    with pytest.raises(ValueError, match="restrict_to"):
        evaluate_link_prediction(score, tiny_kg, "test", progress=False, restrict_to=torch.tensor([2 * n]))


def test_wrong_score_shape_is_reported(tiny_kg):
    with pytest.raises(ValueError, match=r"score output 'model' has shape \(4, 29\)"):
        evaluate_link_prediction(lambda h, r: torch.zeros(len(h), 29), tiny_kg, "test", batch_size=4, progress=False)


class _TableModel(LinkPredictor):
    def __init__(self, kg):
        super().__init__()
        self.num_entities = kg.num_entities
        self.entity = torch.nn.Embedding(kg.num_entities, 8)
        self.relation = torch.nn.Embedding(kg.num_relations_with_inverse, 8)
        self.calls: list[str] = []

    def score_tails(self, heads, relations):
        self.calls.append(f"score training={self.training} grad={torch.is_grad_enabled()}")
        return (self.entity(heads) * self.relation(relations)) @ self.entity.weight.T

    def score_outputs(self, heads, relations):
        scores = self.score_tails(heads, relations)
        return {"fused": scores, "structure": scores.flip(1)}

    def prepare_evaluation(self):
        self.calls.append("prepare")

    def end_evaluation(self):
        self.calls.append("end")


def test_link_predictor_is_evaluated_in_eval_mode_with_hooks(tiny_kg):
    torch.manual_seed(0)
    model = _TableModel(tiny_kg)
    model.train()
    result = evaluate_link_prediction(model, tiny_kg, "valid", batch_size=10, progress=False)
    assert set(result) == {"fused", "structure"}
    assert model.calls[0] == "prepare" and model.calls[-1] == "end"
    assert set(model.calls[1:-1]) == {"score training=False grad=False"}
    assert model.training  # restored
    assert 0 < result["fused"].mrr <= 1


def test_device_filter_agrees_with_filter_index(tiny_kg):
    from imf_kg.evaluation.filtering import DeviceFilter

    index = tiny_kg.filter_index
    generator = torch.Generator().manual_seed(7)
    heads = torch.randint(0, tiny_kg.num_entities, (200,), generator=generator)
    relations = torch.randint(0, tiny_kg.num_relations_with_inverse, (200,), generator=generator)
    expected_rows, expected_cols = index.lookup(heads, relations)
    rows, cols = DeviceFilter(index, "cpu").lookup(heads, relations)
    assert len(expected_rows) > 0 and torch.equal(rows, expected_rows) and torch.equal(cols, expected_cols)
