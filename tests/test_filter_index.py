"""FilterIndex against a brute-force Python dict of (head, relation) -> set of tails."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from imf_kg.data.filter_index import FilterIndex


def brute_force(triples: torch.Tensor) -> dict[tuple[int, int], set[int]]:
    answers: dict[tuple[int, int], set[int]] = defaultdict(set)
    for head, relation, tail in triples.tolist():
        answers[(head, relation)].add(tail)
    return answers


def as_pairs(batch_index: torch.Tensor, entity: torch.Tensor) -> set[tuple[int, int]]:
    pairs = list(zip(batch_index.tolist(), entity.tolist()))
    assert len(pairs) == len(set(pairs)), "an answer is listed twice"
    return set(pairs)


def random_triples(seed: int, n: int, num_entities: int, num_relations: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    triples = torch.stack(
        [
            torch.randint(num_entities, (n,), generator=generator),
            torch.randint(num_relations, (n,), generator=generator),
            torch.randint(num_entities, (n,), generator=generator),
        ],
        dim=1,
    )
    return torch.cat([triples, triples[: n // 5]])  # some duplicates


@pytest.mark.parametrize("seed, n, num_entities, num_relations", [(0, 300, 20, 3), (1, 2000, 50, 10), (2, 50, 1000, 7)])
def test_lookup_matches_brute_force(seed, n, num_entities, num_relations):
    triples = random_triples(seed, n, num_entities, num_relations)
    index = FilterIndex(triples, num_entities, num_relations)
    reference = brute_force(triples)
    assert len(index) == len(reference)
    assert index.num_answers == sum(len(tails) for tails in reference.values())
    # every possible query of a few heads, known or not, in one batch
    heads = torch.arange(min(num_entities, 15)).repeat_interleave(num_relations)
    relations = torch.arange(num_relations).repeat(len(heads) // num_relations)
    expected = {(k, t) for k, (h, r) in enumerate(zip(heads.tolist(), relations.tolist())) for t in reference.get((h, r), ())}
    assert as_pairs(*index.lookup(heads, relations)) == expected
    dense = index.dense(heads, relations)
    assert dense.shape == (len(heads), num_entities)
    assert {tuple(p) for p in dense.nonzero().tolist()} == expected


@pytest.mark.parametrize("seed", [3, 4])
def test_queries_and_lookup_rows_match_brute_force(seed):
    triples = random_triples(seed, 500, 30, 6)
    index = FilterIndex(triples, 30, 6)
    reference = brute_force(triples)
    queries = index.queries()
    assert sorted(map(tuple, queries.tolist())) == sorted(reference)
    keys = queries[:, 0] * 6 + queries[:, 1]
    assert torch.all(keys[1:] > keys[:-1])  # sorted, distinct
    rows = torch.randperm(len(queries), generator=torch.Generator().manual_seed(seed))[:40]
    expected = {(k, t) for k, row in enumerate(rows.tolist()) for t in reference[tuple(queries[row].tolist())]}
    assert as_pairs(*index.lookup_rows(rows)) == expected


def test_repeated_and_unknown_queries_and_empty_index():
    triples = torch.tensor([[0, 1, 2], [0, 1, 3], [2, 0, 0]])
    index = FilterIndex(triples, 4, 2)
    batch, entity = index.lookup(torch.tensor([0, 3, 0, 2]), torch.tensor([1, 1, 1, 1]))
    assert as_pairs(batch, entity) == {(0, 2), (0, 3), (2, 2), (2, 3)}
    empty_batch, empty_entity = index.lookup(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
    assert len(empty_batch) == len(empty_entity) == 0
    nothing = FilterIndex(torch.empty(0, 3, dtype=torch.long), 4, 2)
    assert len(nothing) == 0 and nothing.num_answers == 0
    batch, entity = nothing.lookup(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert len(batch) == len(entity) == 0
    assert not nothing.dense(torch.tensor([0]), torch.tensor([1])).any()


def test_index_built_by_knowledge_graph_includes_inverses():
    from imf_kg.data.kg import KnowledgeGraph

    triples = random_triples(5, 200, 25, 4)
    kg = KnowledgeGraph.from_id_triples(
        "random", [f"e{i}" for i in range(25)], [f"r{i}" for i in range(4)],
        {"train": triples[:150], "valid": triples[150:180], "test": triples[180:]}, unseen="keep",
    )
    reference = brute_force(kg.with_inverse(triples))
    heads = torch.arange(25).repeat_interleave(8)
    relations = torch.arange(8).repeat(25)
    expected = {(k, t) for k, (h, r) in enumerate(zip(heads.tolist(), relations.tolist())) for t in reference.get((h, r), ())}
    assert as_pairs(*kg.filter_index.lookup(heads, relations)) == expected
    train_only = brute_force(kg.with_inverse(kg.train))
    expected_train = {(k, t) for k, (h, r) in enumerate(zip(heads.tolist(), relations.tolist())) for t in train_only.get((h, r), ())}
    assert as_pairs(*kg.train_index.lookup(heads, relations)) == expected_train
