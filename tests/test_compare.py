"""imf-kg compare: every method and PyKEEN baseline runs under one budget, the PyKEEN wrapper ranks like
PyKEEN, the table has mean ± std, bad method names give one-line errors. Nations, tiny sizes, 1-2 epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from imf_kg.cli import main
from imf_kg.comparison import Budget, parse_methods, run_comparison
from imf_kg.comparison.methods import FusedBranchOnly, LateFusion, build_method_model, method_spec
from imf_kg.errors import ConfigError
from imf_kg.experiment import load_experiment, prepare_data

REPO = Path(__file__).resolve().parents[1]
ALL_METHODS = ["structure", "text", "image", "concat", "late", "tucker", "tucker+decision"]
OUTPUTS = {  # method -> (reported output, every output it scores)
    "structure": ("structure", {"structure", "decision"}),
    "text": ("text", {"text", "decision"}),
    "concat": ("concat", {"concat", "decision"}),
    "late": ("decision", {"structure", "text", "decision"}),
    "tucker": ("tucker", {"tucker", "decision"}),
    "tucker+decision": ("decision", {"structure", "text", "tucker", "decision"}),
    "pykeen:TuckER": ("model", {"model"}),
}


def tiny_config(tmp_path: Path, extra=()):
    """Nations with a random 12-d "text" feature file (no text encoder to load), sizes of a few units."""
    features = tmp_path / "text.npy"
    np.save(features, np.random.default_rng(0).normal(size=(14, 12)).astype(np.float32))
    return load_experiment(REPO / "configs/imf/umls.yaml", [
        "data.dataset=nations", "data.text=null", f"data.features={{text: {features}}}", "model.entity_dim=8",
        "model.relation_dim=4", "model.fusion_rank=8", "train.eval_every=1", "train.device=cpu",
        "optim.batch_size=512", "optim.eval_batch_size=512", "train.progress=false", *extra])


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    cfg = tiny_config(tmp)
    lines: list[str] = []
    result = run_comparison(cfg, ALL_METHODS, ["TuckER"], seeds=[0, 1], budget=Budget(epochs=2),
                            out_dir=tmp / "out", log=lines.append)
    return tmp / "out", result, lines


# ------------------------------------------------------------------------------------------ every method
def test_every_method_and_baseline_produces_one_record_per_seed(comparison):
    out, result, lines = comparison
    methods = [r["method"] for r in result["records"]]
    assert methods == [m for m in OUTPUTS for _ in (0, 1)]
    for record in result["records"]:
        output, scored = OUTPUTS[record["method"]]
        assert record["output"] == output and set(record["test_outputs"]) == scored, record["method"]
        assert 0.0 < record["mrr"] <= 1.0 and 0.0 <= record["hits@1"] <= record["hits@3"] <= record["hits@10"] <= 1.0
        assert record["mrr"] == record["test_outputs"][output]["mrr"]
        assert record["epochs_run"] == 2 and record["best_epoch"] in (1, 2) and record["train_seconds"] > 0
        assert record["valid_mrr"] is not None and record["num_parameters"] > 0
    # the image method is skipped with a reason, not an error
    assert "image" in result["skipped"] and "no 'image' modality" in result["skipped"]["image"]
    assert any(line.startswith("image: skipped") for line in lines)


def test_seeds_change_the_runs_and_selection_is_on_validation(comparison):
    out, result, _ = comparison
    by_seed = {r["seed"]: r for r in result["records"] if r["method"] == "tucker+decision"}
    assert by_seed[0]["mrr"] != by_seed[1]["mrr"]
    lines = (out / "runs/tucker+decision/seed-0/metrics.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines]
    assert all(not any(key.startswith("test") for key in h) for h in history)
    valid = [h["valid/mrr"] for h in history]
    assert by_seed[0]["best_epoch"] == 1 + int(np.argmax(valid))  # earliest of equal bests
    assert by_seed[0]["valid_mrr"] == pytest.approx(max(valid))
    baseline = json.loads((out / "runs/pykeen-TuckER/seed-0/record.json").read_text())
    valid = [h["valid/mrr"] for h in baseline["history"]]
    assert baseline["best_epoch"] == 1 + int(np.argmax(valid))
    assert baseline["model"]["inverse_triples"] is True and baseline["model"]["loop"] == "lcwa"


def test_table_plot_and_json_hold_mean_and_std_over_seeds(comparison):
    out, result, _ = comparison
    table = (out / "comparison.md").read_text()
    for method in OUTPUTS:
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        cells = row.strip("|").split("|")
        assert cells[1].strip() == "2" and all("±" in c for c in cells[2:]), row
    assert "| method | runs | MRR | Hits@1 | Hits@3 | Hits@10 | train s |" in table
    assert "image: skipped" in table
    rows = {r["method"]: r for r in result["rows"]}
    mrrs = [r["mrr"] for r in result["records"] if r["method"] == "late"]
    assert rows["late"]["mrr_mean"] == pytest.approx(np.mean(mrrs))
    assert rows["late"]["mrr_std"] == pytest.approx(np.std(mrrs, ddof=1))
    assert f"{np.mean(mrrs):.4f} ± {np.std(mrrs, ddof=1):.4f}" in table
    saved = json.loads((out / "comparison.json").read_text())
    assert len(saved["records"]) == len(result["records"]) and saved["skipped"] == result["skipped"]
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------- method models
def test_method_models_have_exactly_their_branches(tmp_path):
    cfg = tiny_config(tmp_path)
    kg = prepare_data(cfg, progress=False)
    available = ["structure", "text"]
    concat = build_method_model(method_spec("concat", cfg.model, available), kg)
    late = build_method_model(method_spec("late", cfg.model, available), kg)
    assert isinstance(concat, FusedBranchOnly) and list(concat.scorers) == ["concat"]
    assert isinstance(late, LateFusion) and list(late.scorers) == ["structure", "text"] and late.entity_fusion is None
    assert late.decision.mode == "uniform" and not list(late.decision.parameters())
    heads, relations = torch.tensor([0, 3]), torch.tensor([1, 60])
    late.eval()
    scores = late.score_outputs(heads, relations)
    mean = (torch.sigmoid(scores["structure"]) + torch.sigmoid(scores["text"])) / 2
    assert torch.allclose(torch.sigmoid(scores["decision"]), mean, atol=1e-6)
    # early fusion is the only path to the structure table, so it must train it
    concat.train()
    loss, _ = concat.loss(heads, relations, torch.zeros(2, kg.num_entities))
    loss.backward()
    assert concat.entity_embeddings["structure"].weight.grad.abs().sum() > 0
    assert isinstance(method_spec("image", cfg.model, available), str)


# ------------------------------------------------------------------------------------------------ budget
def test_time_budget_stops_at_the_first_epoch_end_and_validates_it(tmp_path):
    cfg = tiny_config(tmp_path)
    budget = Budget(epochs=50, minutes=1e-9)  # over as soon as the first epoch ends
    result = run_comparison(cfg, ["structure"], ["DistMult"], [0], budget, tmp_path / "out", log=lambda _: None)
    for record in result["records"]:
        assert record["epochs_run"] == 1 and record["best_epoch"] == 1 and record["out_of_time"], record["method"]
    assert "wall-clock minutes per method" in result["table"]


# ------------------------------------------------------------------------------------ PyKEEN wrapper
@pytest.mark.parametrize("model_name", ["TuckER", "RotatE"])  # with and without PyKEEN's inverse triples
def test_pykeen_wrapper_ranks_like_pykeens_own_head_and_tail_scoring(tmp_path, model_name):
    from pykeen.evaluation import RankBasedEvaluator

    from imf_kg.baselines.pykeen_baselines import train_pykeen_baseline
    from imf_kg.evaluation import evaluate_link_prediction

    cfg = tiny_config(tmp_path)
    kg = prepare_data(cfg, progress=False)
    run = train_pykeen_baseline(model_name, kg, cfg, seed=0, epochs=1)
    model, chosen = run.predictor.model, [0, 7, 42, 101, 200]
    n = len(kg.test)
    queries = torch.tensor(chosen + [n + i for i in chosen])  # tail queries, then the same triples' head queries
    ours = evaluate_link_prediction(run.predictor, kg, split="test", restrict_to=queries, return_ranks=True,
                                    progress=False)["model"]
    our_ranks = dict(zip(ours.query_index.tolist(), ours.ranks["realistic"].tolist()))
    for i in chosen:
        h, r, t = kg.test[i].tolist()
        # the scores themselves: PyKEEN's tail scores for (h, r), its head scores for (r, t)
        with torch.no_grad():
            wrapped = run.predictor.score_tails(torch.tensor([h, t]), torch.tensor([r, r + kg.num_relations]))
            assert torch.allclose(wrapped[0], model.predict_t(torch.tensor([[h, r]]))[0], atol=1e-6)
            assert torch.allclose(wrapped[1], model.predict_h(torch.tensor([[r, t]]))[0], atol=1e-6)
        evaluator = RankBasedEvaluator(filtered=True, clear_on_finalize=False)
        evaluator.evaluate(model, mapped_triples=kg.test[i:i + 1], batch_size=1, use_tqdm=False,
                           additional_filter_triples=[kg.train, kg.valid, kg.test])
        pykeen = {side: float(np.concatenate(evaluator.ranks[(side, "realistic")])[0]) for side in ("head", "tail")}
        assert our_ranks[i] == pykeen["tail"], (model_name, i, "tail")
        assert our_ranks[n + i] == pykeen["head"], (model_name, i, "head")


# ------------------------------------------------------------------------------------------- bad input
def test_unknown_method_names_give_one_line_config_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"unknown method 'fancy'; expected some of structure, text, image, concat, "
                                          r"late, tucker, tucker\+decision"):
        parse_methods("structure,fancy")
    assert parse_methods("text,pykeen:ComplEx") == (["text"], ["ComplEx"])
    with pytest.raises(ConfigError, match="named twice"):
        parse_methods("text,text")
    code = main(["compare", "--config", str(REPO / "configs/imf/umls.yaml"), "--methods", "structure,bogus",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown method 'bogus'" in err and "tucker+decision" in err
    cfg = tiny_config(tmp_path)
    with pytest.raises(ConfigError, match="unknown PyKEEN model 'NoSuchModel'; expected one of .*TuckER"):
        run_comparison(cfg, [], ["NoSuchModel"], [0], Budget(epochs=1), tmp_path / "y", log=lambda _: None)
