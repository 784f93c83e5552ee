"""Bounded memory at scale: evaluation memory follows the budget setting, not the entity count; metrics do not
depend on the budget; hub queries keep the filter within the budget; the filter index and duplicate count stay
exact beyond packed-key range; cached feature matrices are memory-mapped, not read whole.

The graphs come from benchmarks/scale_eval.py (the 1M-entity benchmark's generator, scaled down), and
memory is measured with its :class:`TensorMemoryTracker` (live torch storage allocated inside a block: the CPU
allocator keeps no statistics, and RSS also counts freed memory the C allocator keeps).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scale_eval  # noqa: E402
from scale_eval import TensorMemoryTracker, build_model, build_synthetic_kg, dense_reference_ranks  # noqa: E402

from imf_kg.data.filter_index import FilterIndex, sorted_distinct_pairs  # noqa: E402
from imf_kg.data.kg import _count_duplicates  # noqa: E402
from imf_kg.evaluation import batch_size_for_budget, evaluate_link_prediction  # noqa: E402
from imf_kg.evaluation.evaluator import FILTER_BYTES_PER_ANSWER  # noqa: E402

MIB = 2**20
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def graphs():
    """Two synthetic graphs, 50k and 200k entities (3 train triples per entity, 2k test triples)."""
    out = {}
    for n in (50_000, 200_000):
        kg = build_synthetic_kg(n, num_relations=100, num_train=3 * n, num_valid=500, num_test=2_000, seed=1)
        kg.filter_index  # built here, not inside the measured evaluations
        out[n] = (kg, build_model("distmult", kg, dim=16, device=CPU, seed=1))
    return out


def tracked_peak(model, kg, budget: int, positions: torch.Tensor) -> TensorMemoryTracker:
    tracker = TensorMemoryTracker()
    with tracker:
        evaluate_link_prediction(model, kg, "test", max_score_bytes=budget, restrict_to=positions, progress=False)
    return tracker


def spread_positions(kg, count: int) -> torch.Tensor:
    """``count`` query positions, half tail and half head queries."""
    half = count // 2
    return torch.cat([torch.arange(half), len(kg.test) + torch.arange(half)])


# ------------------------------------------------------------------------------------- the generator
def test_synthetic_graph_has_the_promised_shape():
    kg = build_synthetic_kg(20_000, num_relations=30, num_train=60_000, num_valid=100, num_test=300, seed=3,
                            hub_answers=5_000, hub_test=20)
    assert kg.num_entities == 20_000 and kg.num_relations == 30
    assert len(kg.train) == 65_000 and len(kg.valid) == 100 and len(kg.test) == 300
    seen = torch.zeros(kg.num_entities, dtype=torch.bool)
    seen[kg.train[:, 0]] = True
    assert bool(seen.all()), "every entity must occur in train"
    assert set(kg.train[:, 1].tolist()) == set(range(30))
    tail_degree = torch.bincount(kg.train[:60_000, 2], minlength=kg.num_entities).float()  # without the hub
    assert tail_degree.max() > 50 * tail_degree.mean(), "Zipf tails: some entities are hubs"
    hub, hub_relation = int(kg.test[0, 2]), 29
    assert (kg.test[:20, 1] == hub_relation).all() and (kg.test[:20, 2] == hub).all()
    _, answers = kg.filter_index.lookup(torch.tensor([hub]), torch.tensor([hub_relation + kg.num_relations]))
    assert len(answers) == 5_000 + 20  # the train links plus the test triples' own heads
    assert kg.summary()["train"] == 65_000


def test_tracker_counts_new_storage_once_and_releases_it():
    existing = torch.zeros(1000)
    with TensorMemoryTracker() as tracker:
        view = existing[:10]  # a view of storage from before the block: not an allocation
        big = torch.ones(250_000)  # 1,000,000 bytes
        alias = big.view(500, 500)  # same storage: counted once
        del big
        small = alias.sum(1)
        assert tracker.live_bytes == 1_000_000 + small.untyped_storage().nbytes()
        del alias
        assert tracker.live_bytes == small.untyped_storage().nbytes()
    assert tracker.peak_bytes == 1_000_000 + 2000 and tracker.largest_bytes == 1_000_000
    assert view.shape == (10,)


# --------------------------------------------------------------------------- memory follows the budget
def test_evaluation_peak_follows_the_budget_not_the_entity_count(graphs):
    peaks = {}
    for n, (kg, model) in graphs.items():
        positions = spread_positions(kg, 160)
        for budget in (2 * MIB, 8 * MIB):
            tracker = tracked_peak(model, kg, budget, positions)
            peaks[n, budget] = tracker.peak_bytes
            # one batch: scores (4 bytes) + comparison mask (1 byte) per entry within the budget, plus small
            # per-query vectors; nothing of size N * anything else
            assert tracker.largest_bytes <= budget
            assert 0.6 * budget <= tracker.peak_bytes <= 1.1 * budget, (n, budget, tracker.peak_bytes)
    for budget in (2 * MIB, 8 * MIB):  # 4x the entities, same peak
        assert peaks[200_000, budget] <= 1.15 * peaks[50_000, budget]
    for n in graphs:  # 4x the budget, about 4x the peak
        assert peaks[n, 8 * MIB] >= 3 * peaks[n, 2 * MIB]


def test_budget_below_one_row_still_evaluates_one_query_at_a_time(graphs):
    kg, model = graphs[200_000]
    seen = []

    def recording(heads, relations):
        seen.append(len(heads))
        return model.score_outputs(heads, relations)

    evaluate_link_prediction(recording, kg, "test", max_score_bytes=1000, restrict_to=torch.arange(5), progress=False)
    assert seen == [1] * 5
    assert batch_size_for_budget(1000, kg.num_entities) == 1


def test_ranks_do_not_depend_on_the_budget(graphs):
    kg, model = graphs[200_000]
    positions = spread_positions(kg, 300)
    runs = [
        evaluate_link_prediction(model, kg, "test", restrict_to=positions, progress=False, return_ranks=True,
                                 **setting)["model"]
        for setting in ({"max_score_bytes": 2 * MIB}, {"max_score_bytes": 64 * MIB}, {"batch_size": 7})
    ]
    assert len(runs[0].ranks["realistic"]) == 300
    for other in runs[1:]:
        for rank_type, ranks in runs[0].ranks.items():
            assert torch.equal(other.ranks[rank_type], ranks), rank_type
        assert other.to_dict() == runs[0].to_dict()
    # and the ranks are the right ones (quantised embeddings: exact scores, so the reference agrees exactly)
    sample = torch.tensor([0, 1, 149, 150, 151, 299])
    reference, _ = dense_reference_ranks(model, kg, "test", positions[sample], "model", CPU)
    assert torch.equal(runs[0].ranks["realistic"][sample], reference)


# --------------------------------------------------------------------------------- hub queries
def test_hub_queries_keep_the_filter_within_the_budget():
    n, hub_answers = 50_000, 30_000
    kg = build_synthetic_kg(n, num_relations=20, num_train=2 * n, num_valid=50, num_test=400, seed=5,
                            hub_answers=hub_answers, hub_test=30)
    model = build_model("distmult", kg, dim=16, device=CPU, seed=5)
    kg.filter_index
    budget = 2 * MIB
    batches = []

    def recording(heads, relations):
        rows, _ = kg.filter_index.lookup(heads, relations)
        batches.append((len(heads), len(rows)))
        return model.score_outputs(heads, relations)

    positions = torch.cat([torch.arange(40), len(kg.test) + torch.arange(40)])  # 30 hub head queries inside
    result = evaluate_link_prediction(recording, kg, "test", max_score_bytes=budget, restrict_to=positions,
                                      progress=False, return_ranks=True)["model"]
    limit = budget // FILTER_BYTES_PER_ANSWER
    assert max(answers for _, answers in batches) > hub_answers  # the hub queries were evaluated ...
    assert all(answers <= limit or size == 1 for size, answers in batches)  # ... never two in one batch
    assert max(size for size, _ in batches) == batch_size_for_budget(budget, n)  # other batches stay full
    tracker = tracked_peak(model, kg, budget, positions)
    assert tracker.peak_bytes <= 2 * budget  # the documented bound: scores and filter each within the budget
    hub_positions = torch.tensor([40, 41, 69])  # in `positions`: head queries of hub test triples
    reference, _ = dense_reference_ranks(model, kg, "test", positions[hub_positions], "model", CPU)
    assert torch.equal(result.ranks["realistic"][hub_positions], reference)


# ------------------------------------------------------------------- filter index beyond packed keys
def test_distinct_pairs_agree_between_packed_and_lexicographic_paths():
    rng = np.random.default_rng(0)
    major = rng.integers(0, 40, 5_000).astype(np.int64)
    minor = rng.integers(0, 30, 5_000).astype(np.int64)
    expected = sorted(set(zip(major.tolist(), minor.tolist())))
    packed = sorted_distinct_pairs(major.copy(), minor, 30)
    spread = sorted_distinct_pairs(major.copy() << 40, minor << 30, 2**61)  # no longer fits in one int64 key
    assert list(zip(*(a.tolist() for a in packed))) == expected
    assert list(zip(*((a >> s).tolist() for a, s in zip(spread, (40, 30))))) == expected


def test_filter_index_and_duplicate_count_with_ids_beyond_packed_keys():
    big = 10**10  # entity ids whose (query, tail) key overflows int64 when packed
    triples = torch.tensor([[big - 1, 1, 5], [big - 1, 1, 5], [3, 0, big - 2], [big - 1, 1, 2], [0, 1, big - 1]])
    index = FilterIndex(triples, big, 2)
    rows, tails = index.lookup(torch.tensor([big - 1, 3, 7]), torch.tensor([1, 0, 1]))
    assert list(zip(rows.tolist(), tails.tolist())) == [(0, 2), (0, 5), (1, big - 2)]
    assert index.num_answers == 4
    assert _count_duplicates(triples, big, 2) == 1
    assert _count_duplicates(torch.cat([triples, triples]), big, 2) == 6
    assert _count_duplicates(triples[[0, 2, 3]], big, 2) == 0


# ------------------------------------------------------------------------ memory-mapped feature cache
def _proc_self(field: str, path: str = "/proc/self/status") -> int:
    with open(path) as handle:
        return int(re.search(rf"^{field}:\s+(\d+)", handle.read(), re.MULTILINE).group(1))


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_cached_feature_matrix_is_memory_mapped_not_read_whole(tmp_path):
    from imf_kg.encoders.cache import FeatureCache
    from imf_kg.encoders.modality import EncodedModality

    cache = FeatureCache(tmp_path)
    rows, dim = 4096, 2048  # 32 MiB of float32
    values = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim)
    parts = {"model": "m", "input": "x"}
    cache.store("text", parts, values)
    del values
    read_before, rss_before = _proc_self("rchar", "/proc/self/io"), _proc_self("VmRSS")
    loaded = cache.load("text", parts, rows=rows)
    read_bytes = _proc_self("rchar", "/proc/self/io") - read_before
    assert isinstance(loaded, np.memmap) and loaded.shape == (rows, dim)
    assert read_bytes < 64 * 1024, f"load read {read_bytes} bytes: only the header should be read"
    row = np.array(loaded[1234])  # touching one row faults in a few pages, not the file
    np.testing.assert_array_equal(row, np.arange(1234 * dim, 1235 * dim, dtype=np.float32))
    encoded = EncodedModality(values=loaded, mask=np.ones(rows, dtype=bool))  # what the encoders return
    assert encoded.values.data_ptr() == loaded.ctypes.data  # still the mapping, not a copy
    assert (_proc_self("VmRSS") - rss_before) * 1024 < 8 * MIB
    loaded[0, 0] = -1.0  # copy-on-write: the cache file is untouched
    assert cache.load("text", parts)[0, 0] == 0.0


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_precomputed_npy_features_are_memory_mapped(tmp_path):
    """The validity checks stream over the mapping; the matrix itself is not copied into memory."""
    from imf_kg.encoders.precomputed import load_feature_matrix

    rows, dim = 4096, 2048  # 32 MiB of float32
    path = tmp_path / "features.npy"
    np.save(path, np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) + 1)
    anon_before = _proc_self("RssAnon")
    encoded = load_feature_matrix(path)
    row = encoded.values[1234].numpy()
    np.testing.assert_array_equal(row, np.arange(1234 * dim, 1235 * dim, dtype=np.float32) + 1)
    assert bool(encoded.mask.all())
    # a copy would add 32 MiB of anonymous memory; mapped pages count as file-backed (RssFile) instead
    assert (_proc_self("RssAnon") - anon_before) * 1024 < 12 * MIB
    encoded.values[0, 0] = -1.0  # copy-on-write: the file is untouched
    assert np.load(path, mmap_mode="r")[0, 0] == 1.0


def test_benchmark_script_runs_end_to_end(capsys):
    status = scale_eval.main(["--entities", "3000", "--relations", "10", "--train", "9000", "--valid", "50",
                              "--test", "100", "--dim", "8", "--max-score-mb", "0.05", "--check", "10",
                              "--track-queries", "40", "--hub-answers", "1000", "--hub-test", "5"])
    out = capsys.readouterr().out
    assert status == 0, out
    summary = [line for line in out.splitlines() if line.startswith("SUMMARY |")]
    assert len(summary) == 1 and summary[0].endswith("| PASS |") and "3,000 entities" in summary[0]
    assert "identical ranks" in out
