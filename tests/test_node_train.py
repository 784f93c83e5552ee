"""Training node classifiers: the task, selection on validation, mini-batches, run_seeds, configs and the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from imf_kg.config import load_config
from imf_kg.errors import ConfigError
from imf_kg.io import read_jsonl
from node_tasks.cli import main
from node_tasks.compare import fusion_margins
from node_tasks.synthetic import make_synthetic
from node_tasks.train import (MODELS, ModelConfig, NodeClassificationTask, NodeExperimentConfig, OptimConfig,
                              TorchNeighborSampler, build_model, build_optimizer, config_for_model,
                              make_neighbor_loader, run_seeds, train_and_test)
from node_tasks.losses import NodeClassificationLoss

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "hgnn_ima").glob("*.yaml"))
SMALL = {"nodes": {"paper": 90, "author": 60, "venue": 6}, "feature_dim": 8, "own_signal": 1.5, "noise": 0.6}


def small_data(seed: int = 0):
    return make_synthetic(seed=seed, **SMALL)


def small_config(name: str = "ima", epochs: int = 12, **train) -> NodeExperimentConfig:
    config = NodeExperimentConfig(data_options={"seed": 0, **SMALL})
    return replace(config, model=ModelConfig(name=name, hidden=16, heads=2, layers=2),
                   optim=OptimConfig(lr=0.01), train=replace(config.train, epochs=epochs, device="cpu", **train))


def test_full_batch_training_learns_selects_on_validation_and_tests_once(tmp_path, monkeypatch):
    data = small_data()
    evaluated = []
    original = NodeClassificationTask.evaluate

    def counting(self, model, split="test"):
        evaluated.append(split)
        return original(self, model, split)

    monkeypatch.setattr(NodeClassificationTask, "evaluate", counting)
    record = train_and_test(small_config(epochs=15), data, tmp_path / "run", seed=0)
    assert evaluated.count("test") == 1 and evaluated.count("val") == 15
    assert record["micro_f1"] > 0.55 and record["val_macro_f1"] > 0.55  # chance is 1/3
    history = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    best = max(r["valid/macro_f1"] for r in history)
    assert record["val_macro_f1"] == pytest.approx(best)
    assert (tmp_path / "run" / "training_curve.png").is_file()


@pytest.mark.parametrize("name", ["ima-ref", "hgt-late", "mlp"])
def test_run_seeds_one_record_per_seed(name):
    data = small_data()
    results = run_seeds(name, data, [0, 1], small_config(epochs=1))
    records = results.records
    assert [r["seed"] for r in records] == [0, 1]
    values = [r["macro_f1"] for r in records]
    assert results.summary["macro_f1_mean"] == pytest.approx(sum(values) / 2)
    assert results.summary["macro_f1_std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert "±" in str(results)
    assert all(r["method"] == name and 0.0 <= r["macro_f1"] <= 1.0 for r in records)


def test_every_model_name_builds():
    data = small_data()
    for name in MODELS:
        model, ablations = build_model(name, data, ModelConfig(hidden=16, heads=2, layers=2))
        expected = {"ima-cross": ("cross",), "ima-align": ("align",), "ima-latt": ("latt",), "ima-lind": ("lind",)}
        assert ablations == expected.get(name, ())
        assert sum(p.numel() for p in model.parameters()) > 0


def test_neighbor_sampler_seeds_first_real_edges_and_fanout():
    data = small_data()
    target = data.target_node_type
    fanout = [2, 3]
    sampler = TorchNeighborSampler(data, fanout)
    loader = make_neighbor_loader(data, data[target].train_mask, fanout, batch_size=7, shuffle=False)
    train_ids = data[target].train_mask.nonzero().flatten()
    batch = next(iter(loader))
    assert batch[target].batch_size == 7
    torch.testing.assert_close(batch[target].n_id[:7], train_ids[:7])
    for et in batch.edge_types:
        local = batch[et].edge_index
        if local.numel() == 0:
            continue
        global_pairs = torch.stack([batch[et[0]].n_id[local[0]], batch[et[2]].n_id[local[1]]])
        original = {tuple(p) for p in data[et].edge_index.t().tolist()}
        assert all(tuple(p) in original for p in global_pairs.t().tolist())
        # first hop: each seed keeps at most fanout[0] in-edges per edge type
        if et[2] == target:
            per_seed = torch.bincount(local[1][local[1] < 7], minlength=7)
            assert int(per_seed.max()) <= fanout[0]
    assert sampler.num_neighbors == fanout


def test_minibatch_training_path_runs(tmp_path):
    data = small_data()
    config = small_config(epochs=2)
    config = replace(config, mini_batch=replace(config.mini_batch, batch_size=8, num_neighbors=(4, 4)))
    record = train_and_test(config, data, tmp_path / "mb", seed=0)
    assert 0.0 <= record["macro_f1"] <= 1.0
    history = read_jsonl(tmp_path / "mb" / "metrics.jsonl")
    assert history[0]["batches"] == -(-int(data["paper"].train_mask.sum()) // 8)
    model, _ = build_model("ima", data, ModelConfig(hidden=16, heads=2, layers=2))
    task = NodeClassificationTask(data, NodeClassificationLoss(), batch_size=8, num_neighbors=(4, 4))
    loss, logs = task.training_step(model, next(iter(task.train_batches(1, torch.Generator().manual_seed(0)))))
    assert torch.isfinite(loss) and "ce_fused" in logs


def test_onecycle_warms_up_and_short_runs_work():
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(model, OptimConfig(lr=1e-3), steps=100)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 25)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3, rel=0.05)
    assert build_optimizer(model, OptimConfig(), steps=3)[1] is None
    build_optimizer(model, OptimConfig(), steps=20)  # warm-up shorter than two steps must not divide by zero


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load_and_build(path):
    config = load_config(path, NodeExperimentConfig)
    assert config.paper.get("citation") or config.notes  # every config names its source
    model, _ = build_model(config.model.name, small_data(), replace(config.model, hidden=16, heads=2))
    assert sum(p.numel() for p in model.parameters()) > 0
    for name, settings in config.per_model.items():  # every per-model entry resolves against the schema and builds
        resolved = config_for_model(config, name)
        for key, value in settings.get("model", {}).items():
            assert getattr(resolved.model, key) == value
        model, _ = build_model(name, small_data(), replace(resolved.model, hidden=16, heads=2))
        assert sum(p.numel() for p in model.parameters()) > 0


def test_fusion_margins_verdict():
    rows = [{"method": "ima", "micro_f1_mean": 0.8, "micro_f1_std": 0.01, "macro_f1_mean": 0.8, "macro_f1_std": 0.01},
            {"method": "hgt-early", "micro_f1_mean": 0.75, "micro_f1_std": 0.02, "macro_f1_mean": 0.78,
             "macro_f1_std": 0.02}]
    margins = {m["metric"]: m for m in fusion_margins(rows)}
    assert margins["micro_f1"]["beats_by_2_std"] is True  # 0.05 > 2 * 0.02
    assert margins["macro_f1"]["beats_by_2_std"] is False  # 0.02 < 2 * 0.02
    one_seed = [dict(row, n=1, micro_f1_std=0.0, macro_f1_std=0.0) for row in rows]
    for margin in fusion_margins(one_seed):  # one run each: no std, so no verdict (not "inf std")
        assert margin["beats_by_2_std"] is False and math.isnan(margin["margin_in_std"])


def _write_small_config(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(
        "dataset: synthetic\n"
        "data_options: {seed: 0, nodes: {paper: 90, author: 60, venue: 6}, feature_dim: 8}\n"
        "model: {name: ima, hidden: 16, heads: 2, layers: 2}\n"
        "train: {epochs: 2, device: cpu, metric: macro_f1, progress: false}\n"
        "notes: [test]\n")
    return path


def test_cli_train_and_compare(tmp_path, capsys):
    config = _write_small_config(tmp_path)
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["method"] == "ima"
    assert "test Micro-F1" in capsys.readouterr().out
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "synthetic", "--config", str(config), "--models", "ima,mlp",
                 "--seeds", "2", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| ima | 2 |" in printed and "Micro-F1" in printed
    assert {p.name for p in out.iterdir()} >= {"comparison.md", "comparison.png", "comparison.json"}


def test_compare_over_several_generated_graphs_pools_them_and_reports_each(tmp_path, capsys):
    config = _write_small_config(tmp_path)
    out = tmp_path / "graphs"
    assert main(["compare", "--dataset", "synthetic", "--config", str(config), "--models", "ima,hgt-early",
                 "--seeds", "2", "--data-seeds", "0,3", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2 seed(s) x 2 graphs" in printed and "| ima | 4 |" in printed
    saved = json.loads((out / "comparison.json").read_text())
    records = saved["records"]
    assert sorted((r["method"], r["data_seed"], r["seed"]) for r in records) == sorted(
        (m, g, s) for m in ("ima", "hgt-early") for g in (0, 3) for s in (0, 1))
    # each graph is its own draw: the same model and seed score differently on the two graphs
    by_graph = {r["data_seed"]: r["val_macro_f1"] for r in records if r["method"] == "ima" and r["seed"] == 0}
    assert by_graph[0] != by_graph[3]
    assert {m["data_seed"] for m in saved["graph_margins"]} == {0, 3}
    assert "graph 3: ima vs hgt-early" in printed


@pytest.mark.parametrize("argv,needle", [
    (["compare", "--models", "ima,nope", "--seeds", "1"], "nope"),
    (["compare", "--seeds", "zero"], "--seeds"),
    (["compare", "--dataset", "imdb", "--data-seeds", "2"], "data seeds"),
    (["compare", "--data-seeds", "0"], "--data-seeds"),
    (["train", "--config", "missing.yaml"], "missing.yaml"),
])
def test_cli_errors_are_one_line_exit_2(argv, needle, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path)] if argv[0] == "compare" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and err.startswith("node-tasks: error:")


def test_cli_bad_override_names_the_key(tmp_path, capsys):
    config = _write_small_config(tmp_path)
    assert main(["train", "--config", str(config), "--set", "model.hiden=8", "--run-dir", str(tmp_path / "r")]) == 2
    assert "hiden" in capsys.readouterr().err


def test_training_fingerprint_reuses_only_provably_identical_runs():
    from node_tasks.compare import training_fingerprint

    data = small_data()
    config = small_config()
    same = {n: training_fingerprint(n, data, config) for n in ("ima", "ima-latt", "ima-lind", "ima-align", "hgt-late")}
    assert same["ima"] == same["ima-latt"]  # hard masking: L_att is identically 0
    assert len({same[n] for n in ("ima", "ima-lind", "ima-align", "hgt-late")}) == 4
    placeholder = replace(config, model=replace(config.model, missing_modality="placeholder"))
    assert training_fingerprint("ima", data, placeholder) != training_fingerprint("ima-latt", data, placeholder)


@pytest.mark.realdata
def test_every_model_runs_on_real_imdb(shared_data, tmp_path):
    """IMDB from shared/data (numeric + keyword modalities; no text encoder, so it stays fast)."""
    from node_tasks.compare import load_dataset

    data = load_dataset("imdb", {"root": str(shared_data / "mmhn" / "IMDB"), "modalities": ["numeric", "keywords"],
                                 "max_keywords": 300})
    assert data.target_node_type == "movie" and data["movie"].num_nodes > 4000
    for name in ("ima", "ima-ref", "hgt-early", "hgt-late", "mlp"):
        model, _ = build_model(name, data, ModelConfig(hidden=16, heads=2, layers=2))
        task = NodeClassificationTask(data, NodeClassificationLoss())
        loss, _ = task.training_step(model, None)
        loss.backward()
        assert torch.isfinite(loss)
        assert 0.0 <= task.evaluate(model, "val")["macro_f1"] <= 1.0


def test_per_model_settings_reach_only_their_model(tmp_path):
    """per_model: a model trains with its own settings (here 3 epochs instead of 2, and another lr), the others
    with the shared ones; the runs record it; an entry naming no model, or touching the data, is refused."""
    from node_tasks.compare import run_comparison, training_fingerprint
    from node_tasks.train import config_for_model

    config = load_config(_write_small_config(tmp_path), NodeExperimentConfig,
                         ["per_model={hgt-early: {train: {epochs: 3}, optim: {lr: 0.02}}}"])
    assert config_for_model(config, "hgt-early").train.epochs == 3
    assert config_for_model(config, "hgt-early").optim.lr == 0.02
    assert config_for_model(config, "ima").train.epochs == 2 and config_for_model(config, "ima").per_model == {}
    run_comparison("synthetic", ["ima", "hgt-early"], [0], config, out_dir=tmp_path / "cmp", keep_runs=True,
                   log=lambda *_: None)
    trained = {m: len(read_jsonl(tmp_path / "cmp" / "runs" / m / "seed0" / "metrics.jsonl")) for m in ("ima", "hgt-early")}
    assert trained == {"ima": 2, "hgt-early": 3}
    assert read_jsonl(tmp_path / "cmp" / "runs" / "hgt-early" / "seed0" / "metrics.jsonl")[0]["lr"] != \
        read_jsonl(tmp_path / "cmp" / "runs" / "ima" / "seed0" / "metrics.jsonl")[0]["lr"]
    # with the same structure, other training settings are another computation (no reuse of runs)
    data = small_data()
    shared = load_config(_write_small_config(tmp_path), NodeExperimentConfig)
    tuned = replace(shared, per_model={"ima-latt": {"optim": {"lr": 0.5}}})
    assert training_fingerprint("ima-latt", data, shared) == training_fingerprint("ima", data, shared)
    assert training_fingerprint("ima-latt", data, tuned) != training_fingerprint("ima", data, tuned)
    for bad, needle in [({"hgt-erly": {"optim": {"lr": 0.1}}}, "hgt-erly"),
                        ({"ima": {"data_options": {"seed": 3}}}, "data_options"),
                        ({"ima": {"optim": {"lrr": 0.1}}}, r"per_model\.ima: .*lrr"),
                        ({"ima": {"model": 3}}, r"per_model\.ima\.model: expected a mapping")]:
        with pytest.raises(ConfigError, match=needle):
            config_for_model(replace(shared, per_model=bad), "ima")


def test_compare_with_parallel_jobs_gives_the_records_of_one_at_a_time(tmp_path):
    """--jobs 2: runs in two spawned workers, one thread each; same records, same order, reused runs still reused."""
    from node_tasks.compare import run_comparison

    config = small_config(epochs=3)
    models, seeds = ["ima", "ima-latt", "hgt-early"], [0, 1]
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = run_comparison("synthetic", models, seeds, config, log=lambda *_: None)
    finally:
        torch.set_num_threads(torch_threads)
    lines = []
    parallel = run_comparison("synthetic", models, seeds, config, out_dir=tmp_path / "cmp", log=lines.append,
                              jobs=2, threads_per_job=1)
    keys = ("method", "seed", "best_epoch", "micro_f1", "macro_f1", "val_macro_f1")
    assert [tuple(r[k] for k in keys) for r in parallel["records"]] == [tuple(r[k] for k in keys) for r in serial["records"]]
    assert [r["method"] for r in parallel["records"]] == ["ima", "ima", "ima-latt", "ima-latt", "hgt-early", "hgt-early"]
    assert any("ima-latt   trains exactly like ima" in line for line in lines)
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["records"][0]["method"] == "ima"
    with pytest.raises(ConfigError, match="jobs=0"):
        run_comparison("synthetic", models, seeds, config, jobs=0)


def test_baseline_norm_reaches_the_hgt_baselines_only():
    data = small_data()
    for name in ("hgt-early", "hgt-late"):
        model, _ = build_model(name, data, ModelConfig(name=name, hidden=8, heads=2, layers=2, baseline_norm=True))
        assert any("norms" in n for n, _ in model.named_parameters())
        plain, _ = build_model(name, data, ModelConfig(name=name, hidden=8, heads=2, layers=2))
        assert not any("norms" in n for n, _ in plain.named_parameters())
    mlp, _ = build_model("mlp", data, ModelConfig(name="mlp", hidden=8, layers=2, baseline_norm=True))
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in mlp.modules())


def test_compare_with_parallel_jobs_reports_a_workers_error():
    from node_tasks.compare import run_comparison

    config = replace(small_config(epochs=2), optim=OptimConfig(lr=0.01, schedule="no-such-schedule"))
    with pytest.raises(ConfigError, match="no-such-schedule"):
        run_comparison("synthetic", ["ima", "hgt-early"], [0, 1], config, jobs=2, threads_per_job=1, log=lambda *_: None)
