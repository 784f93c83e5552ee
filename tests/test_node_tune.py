"""node-tasks tune: a grid per model on validation only, the choice, and the config it writes for compare."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from imf_kg.config import load_config
from imf_kg.errors import ConfigError
from node_tasks.cli import main
from node_tasks.train import NodeClassificationTask, NodeExperimentConfig, config_for_model
from node_tasks.tune import base_reference, choose, grid_cells, parse_grid, run_tuning, with_cell

SMALL = ("dataset: synthetic\n"
         "data_options: {seed: 0, nodes: {paper: 90, author: 60, venue: 6}, feature_dim: 8}\n"
         "model: {name: ima, hidden: 16, heads: 2, layers: 2}\n"
         "train: {epochs: 3, device: cpu, metric: macro_f1, progress: false}\n"
         "per_model:\n"
         "  mlp: {model: {layers: 3}, optim: {lr: 0.02}}\n"
         "notes: [test]\n")


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "configs" / "small.yaml"
    path.parent.mkdir()
    path.write_text(SMALL)
    return path


@pytest.mark.parametrize("spec, expected", [
    ("model.layers=1,2,3", ("model.layers", [1, 2, 3])),
    ("model.layers=[1, 2]", ("model.layers", [1, 2])),
    ("optim.lr=1e-3,0.01", ("optim.lr", ["1e-3", 0.01])),  # YAML reads 1e-3 as a string; the schema converts it
    ("model.gate_dropout=[[0.6, 0.5], [0.0, 0.0]]", ("model.gate_dropout", [[0.6, 0.5], [0.0, 0.0]])),
    ("model.final_attention=softmax,product", ("model.final_attention", ["softmax", "product"])),
])
def test_grid_axes_parse_as_yaml_lists(spec, expected):
    assert parse_grid(spec) == expected


@pytest.mark.parametrize("spec, needle", [
    ("model.layers", "expected key.path=value1,value2"),
    ("model.layers=", "expected key.path=value1,value2"),
    ("model.layers=[]", "non-empty list"),
    ("model.layers=1,2,1", "listed twice"),
    ("model.gate_dropout.0=0.1,0.2", "without list positions"),
])
def test_bad_grid_axes_are_refused(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_grid(spec)


def test_cells_are_the_product_first_axis_slowest_and_ties_go_to_the_first_cell():
    cells = grid_cells([("model.layers", [1, 2]), ("model.dropout", [0.2, 0.5])])
    assert cells == [(("model.layers", 1), ("model.dropout", 0.2)), (("model.layers", 1), ("model.dropout", 0.5)),
                     (("model.layers", 2), ("model.dropout", 0.2)), (("model.layers", 2), ("model.dropout", 0.5))]
    with pytest.raises(ConfigError, match="given twice"):
        grid_cells([("model.layers", [1]), ("model.layers", [2])])
    rows = [{"method": "a", "cell": 2, "val_macro_f1_mean": 0.8}, {"method": "a", "cell": 0, "val_macro_f1_mean": 0.7},
            {"method": "a", "cell": 1, "val_macro_f1_mean": 0.8}, {"method": "b", "cell": 0, "val_macro_f1_mean": 0.1},
            {"method": "b", "cell": 1, "val_macro_f1_mean": 0.3}]
    assert choose(rows) == {"a": 1, "b": 1}


def test_a_cell_is_laid_over_the_models_own_settings_and_checked(small):
    config = load_config(small, NodeExperimentConfig)
    cell = (("model.layers", 1), ("model.dropout", 0.5))
    mlp = config_for_model(with_cell(config, "mlp", cell), "mlp")
    assert (mlp.model.layers, mlp.model.dropout, mlp.optim.lr) == (1, 0.5, 0.02)  # the base's per_model lr stays
    assert config_for_model(with_cell(config, "mlp", cell), "ima").model.layers == 2  # other models untouched
    with pytest.raises(ConfigError, match=r"--grid seed=3 for ima: .*data_options"):
        with_cell(config, "ima", (("data_options.seed", 3),))
    with pytest.raises(ConfigError, match=r"--grid layerz=1 for ima: .*layerz"):
        with_cell(config, "ima", (("model.layerz", 1),))


def test_tuning_never_evaluates_test_chooses_on_validation_and_writes_a_config_compare_reads(small, monkeypatch):
    evaluated = []
    original = NodeClassificationTask.evaluate

    def guarded(self, model, split="test"):
        assert split != "test", "tuning evaluated the test split"
        evaluated.append(split)
        return original(self, model, split)

    monkeypatch.setattr(NodeClassificationTask, "evaluate", guarded)
    config = load_config(small, NodeExperimentConfig, ["train.epochs=4"])
    axes = [("model.layers", [1, 2]), ("model.dropout", [0.2, 0.5])]
    out = small.parent.parent / "tune"
    result = run_tuning("synthetic", ["ima", "ima-latt", "mlp"], axes, [0, 1], config, out, base_path=small,
                        log=lambda *_: None)
    assert evaluated and set(evaluated) == {"val"}
    records = result["records"]
    assert len(records) == 3 * 4 * 2 and not any("micro_f1" in r or "macro_f1" in r for r in records)
    # ima-latt trains exactly like ima under hard masking: reused, not retrained
    assert all(r["same_as"].startswith("ima on ") for r in records if r["method"] == "ima-latt")
    for name in ("ima", "mlp"):
        means = [sum(r["val_macro_f1"] for r in records if r["method"] == name and r["cell"] == i) / 2 for i in range(4)]
        assert result["choices"][name] == means.index(max(means))  # the first cell on an exact tie
    # tuned.yaml: the tuned config as its base plus each model's chosen cell; what compare would train
    text = (out / "tuned.yaml").read_text()
    assert "base: ../configs/small.yaml" in text and "test split was not evaluated" in text
    reloaded = load_config(out / "tuned.yaml", NodeExperimentConfig)
    for name in ("ima", "ima-latt", "mlp"):
        chosen = dict(result["cells"][result["choices"][name]])
        trains = config_for_model(reloaded, name)
        assert (trains.model.layers, trains.model.dropout) == (chosen["model.layers"], chosen["model.dropout"])
        assert trains.train.epochs == 4  # the --set given to the tuning is kept
    assert config_for_model(reloaded, "mlp").optim.lr == 0.02
    saved = json.loads((out / "tuning.json").read_text())
    assert saved["choices"]["mlp"]["cell"] == result["choices"]["mlp"] and len(saved["records"]) == 24
    assert (out / "tuning.png").stat().st_size > 0 and "| ima |" in (out / "tuning.md").read_text()


def test_parallel_tuning_gives_the_records_of_one_at_a_time(small):
    config = load_config(small, NodeExperimentConfig)
    axes = [("model.layers", [1, 2])]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = run_tuning("synthetic", ["ima", "hgt-early"], axes, [0, 1], config, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    parallel = run_tuning("synthetic", ["ima", "hgt-early"], axes, [0, 1], config, log=lambda *_: None, jobs=2,
                          threads_per_job=1)
    keys = ("method", "cell", "seed", "best_epoch", "val_macro_f1", "val_micro_f1")
    assert [tuple(r[k] for k in keys) for r in parallel["records"]] == [tuple(r[k] for k in keys) for r in serial["records"]]
    assert parallel["choices"] == serial["choices"]


def test_cli_tune_and_its_errors(small, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["tune", "--config", str(small), "--models", "mlp,hgt-early", "--grid", "model.layers=1,2",
                 "--seeds", "1", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "chosen" in printed and f"--config {out / 'tuned.yaml'}" in printed
    assert load_config(out / "tuned.yaml", NodeExperimentConfig).per_model["hgt-early"]["model"]["layers"] in (1, 2)
    for argv, needle in [(["--grid", "model.layers=1,1"], "listed twice"),
                         (["--grid", "data_options.seed=1,2"], "data_options"),
                         (["--grid", "model.layers=1", "--models", "nope"], "nope")]:
        models = [] if "--models" in argv else ["--models", "mlp"]
        assert main(["tune", "--config", str(small), "--out", str(out), *models, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and err.startswith("node-tasks: error:")


def test_per_model_dropout_is_not_mistaken_for_the_same_run(small):
    """training_fingerprint: two models of one structure but another dropout rate are two computations."""
    from node_tasks.compare import training_fingerprint
    from node_tasks.synthetic import make_synthetic

    config = load_config(small, NodeExperimentConfig)
    data = make_synthetic(seed=0, nodes={"paper": 90, "author": 60, "venue": 6}, feature_dim=8)
    assert training_fingerprint("ima", data, config) == training_fingerprint("ima-latt", data, config)
    other = replace(config, per_model={"ima-latt": {"model": {"dropout": 0.5}}})
    assert training_fingerprint("ima", data, other) != training_fingerprint("ima-latt", data, other)


def test_tuned_yaml_names_its_base_relatively_inside_one_tree_and_absolutely_across_trees():
    from pathlib import Path

    base = Path("/work/project/configs/hgnn_ima/synthetic.yaml")
    assert base_reference(base, Path("/work/project/runs/tune-synthetic")) == "../../configs/hgnn_ima/synthetic.yaml"
    assert base_reference(base, Path("/tmp/out")) == "/work/project/configs/hgnn_ima/synthetic.yaml"
