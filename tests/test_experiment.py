"""End to end: `imf-kg train` on Nations (structure + entity-name text), then `evaluate` and `predict`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imf_kg.cli import main
from imf_kg.experiment import ExperimentConfig, load_experiment, run_experiment

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.dataset=nations", "data.text=names", "model.entity_dim=16", "model.relation_dim=8",
    "model.fusion_rank=16", "train.epochs=2", "train.eval_every=1", "optim.batch_size=256",
    "train.progress=false", "structure_only_baseline=true",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "nations"
    cfg = load_experiment(REPO / "configs/imf/umls.yaml", TINY)
    results = run_experiment(cfg, run_dir, progress=False)
    return run_dir, results


def test_run_folder_holds_config_checkpoints_metrics_and_reports(trained_run):
    run_dir, results = trained_run
    for name in ("config.yaml", "checkpoints/best.pt", "checkpoints/last.pt", "metrics.jsonl", "results.json",
                 "summary.md", "test_mrr.png", "training_curve.png", "structure-only/checkpoints/best.pt"):
        assert (run_dir / name).exists(), name
    saved = json.loads((run_dir / "results.json").read_text())
    assert set(saved["test"]) == {"structure", "text", "tucker", "decision", "structure-only"}
    for output in saved["test"].values():
        mrr = output["realistic"]["both"]["mrr"]
        assert 0.0 < mrr <= 1.0
    # the resolved config round-trips and names every default
    assert load_experiment(run_dir / "config.yaml") == load_experiment(REPO / "configs/imf/umls.yaml", TINY)
    assert "| decision |" in (run_dir / "summary.md").read_text()


def test_selection_uses_validation_and_test_is_evaluated_once(trained_run, monkeypatch):
    run_dir, results = trained_run
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(not any(k.startswith("test") for k in record) for record in history)
    best = results["runs"]["imf"]["best_epoch"]
    valid = [r["valid/mrr"] for r in history if "valid/mrr" in r]
    assert valid[best - 1] == max(valid)


def test_evaluate_command_reproduces_the_test_table(trained_run, capsys):
    run_dir, results = trained_run
    assert main(["evaluate", str(run_dir), "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = results["test"]["decision"]["realistic"]["both"]["mrr"]
    assert printed["decision"]["realistic"]["both"]["mrr"] == pytest.approx(expected, abs=1e-6)


def test_predict_prints_names_scores_and_weights(trained_run, capsys):
    run_dir, _ = trained_run
    assert main(["predict", str(run_dir), "--head", "usa", "--relation", "treaties", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "decision weights:" in out and "structure" in out and "text" in out
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == 3


def test_existing_run_folder_is_not_overwritten(trained_run):
    run_dir, _ = trained_run
    proc = subprocess.run(
        [sys.executable, "-m", "imf_kg", "train", "--config", str(REPO / "configs/imf/umls.yaml"),
         "--run-dir", str(run_dir), *sum((["--set", s] for s in TINY), [])],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 2
    assert "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (run_dir / "checkpoints/best.pt").exists()


def test_unknown_config_key_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  entity_dimm: 3\n")
    proc = subprocess.run([sys.executable, "-m", "imf_kg", "train", "--config", str(bad)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "entity_dimm" in proc.stderr and "bad.yaml:2" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", sorted((REPO / "configs/imf").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_names_the_paper(path):
    cfg = load_experiment(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.paper


def test_reference_config_sets_every_published_code_switch():
    """`variant: reference` in YAML is a label; the file must spell out IMFConfig.for_variant('reference')."""
    from imf_kg.models.imf_config import _REFERENCE

    cfg = load_experiment(REPO / "configs/imf/reference.yaml")
    mismatched = {k: (getattr(cfg.model, k), v) for k, v in _REFERENCE.items() if getattr(cfg.model, k) != v}
    assert not mismatched
