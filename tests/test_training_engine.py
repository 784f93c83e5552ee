"""The training loop: early stopping, best checkpoint, atomic files, logs, clipping, precision, learning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from imf_kg.data import load_kg
from imf_kg.errors import ConfigError
from imf_kg.io import read_jsonl
from imf_kg.models.distmult import DistMult
from imf_kg.training import (
    OneToNTask,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    TrainingTask,
    seed_everything,
)


class ScriptedTask:
    """A regression task on a linear model whose validation values follow a script.

    ``snapshots[epoch]`` is the model's state when it was validated, to compare with ``best.pt``.
    """

    def __init__(self, script, metric="score", loss_scale=1.0):
        self.script = list(script)
        self.metric = metric
        self.loss_scale = loss_scale
        self.snapshots = {}
        self.calls = 0
        self.inputs = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        self.outputs = self.inputs @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def train_batches(self, epoch, generator):
        order = torch.randperm(len(self.inputs), generator=generator)
        return order.split(8)

    def batch_size_of(self, batch):
        return len(batch)

    def training_step(self, model, batch):
        device = next(model.parameters()).device
        prediction = model(self.inputs[batch].to(device))
        loss = self.loss_scale * ((prediction.float() - self.outputs[batch].to(device)) ** 2).mean()
        return loss, {"mse": float(loss.detach())}

    def validate(self, model):
        value = self.script[self.calls]
        self.calls += 1
        epoch = self.calls  # eval_every=1 in these tests
        self.snapshots[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {self.metric: value, "other": -value}


def make_trainer(tmp_path, task, model=None, optimizer=None, **config_kwargs):
    torch.manual_seed(0)
    model = model or nn.Linear(4, 1)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.01)
    config = TrainConfig(**{"epochs": 10, "progress": False, "device": "cpu", "metric": "score", **config_kwargs})
    return Trainer(model, task, optimizer, config, tmp_path)


def test_scripted_task_satisfies_the_protocol():
    assert isinstance(ScriptedTask([0.0]), TrainingTask)


def test_early_stopping_stops_after_patience_and_keeps_best(tmp_path):
    task = ScriptedTask([0.1, 0.3, 0.2, 0.3, 0.25, 0.9, 0.95])  # ties (0.3 at epoch 4) are not improvements
    trainer = make_trainer(tmp_path, task, patience=3)
    result = trainer.fit()

    assert result.stopped_early and not result.interrupted
    assert result.last_epoch == 5 and task.calls == 5  # epochs 3, 4, 5 fail to beat epoch 2
    assert result.best_epoch == 2 and result.best_metrics == {"score": 0.3, "other": -0.3}
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert all(torch.equal(best[k], task.snapshots[2][k]) for k in best)
    assert not torch.equal(trainer.model.weight.detach(), task.snapshots[2]["weight"])  # trained on after epoch 2
    trainer.load_best()
    assert torch.equal(trainer.model.weight.detach(), task.snapshots[2]["weight"])
    assert [r["is_best"] for r in result.history] == [True, True, False, False, False]


def test_minimisation_mode_and_min_delta(tmp_path):
    task = ScriptedTask([1.0, 0.5, 0.45, 0.2, 0.3])
    result = make_trainer(tmp_path, task, epochs=5, mode="min", min_delta=0.1).fit()
    assert result.best_epoch == 4  # 0.45 beats 0.5 by less than min_delta
    assert not result.stopped_early and result.last_epoch == 5


def test_validation_every_k_epochs_and_after_the_last(tmp_path):
    task = ScriptedTask([0.1, 0.2, 0.3])
    result = make_trainer(tmp_path, task, epochs=5, eval_every=2).fit()
    assert [r["epoch"] for r in result.history if "valid/score" in r] == [2, 4, 5]


def test_run_files_are_written_and_atomic(tmp_path):
    task = ScriptedTask([0.1, 0.2, 0.3])
    make_trainer(tmp_path, task, epochs=3).fit()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in ("train_loss", "train/mse", "lr", "train_time_s", "examples_per_s", "valid/score", "valid_time_s"):
        assert key in records[0], key
    assert records[0]["examples"] == 32
    assert (tmp_path / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint_files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoint_files == ["best.json", "best.pt", "last.pt"]
    assert not list(tmp_path.rglob("*.tmp"))
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and {"python", "numpy", "torch", "cuda", "data"} <= set(last["rng"])


def test_a_failing_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    make_trainer(tmp_path, ScriptedTask([0.1, 0.2]), epochs=1).fit()
    last_path = tmp_path / "checkpoints" / "last.pt"
    before = last_path.read_bytes()

    real_save = torch.save

    def save_then_fail(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and "rng" in obj:  # only the resumable checkpoint
            real_save({"partial": torch.zeros(3)}, handle)
            raise OSError("disk full")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        make_trainer(tmp_path, ScriptedTask([0.1, 0.2]), epochs=2).fit(resume=True)
    assert last_path.read_bytes() == before
    assert torch.load(last_path, weights_only=True)["epoch"] == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_gradient_clipping_bounds_the_update(tmp_path):
    def one_step_change(grad_clip, run_dir):
        task = ScriptedTask([0.0], loss_scale=1e4)
        task.train_batches = lambda epoch, generator: [torch.arange(8)]
        model = nn.Linear(4, 1)
        trainer = make_trainer(run_dir, task, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                               epochs=1, grad_clip=grad_clip)
        before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
        result = trainer.fit()
        after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        return float((after - before).norm()), result.history[0]

    clipped, record = one_step_change(0.01, tmp_path / "clipped")
    unclipped, _ = one_step_change(None, tmp_path / "free")
    assert clipped == pytest.approx(0.01, rel=1e-4)  # SGD with lr 1 moves by exactly the clipped norm
    assert record["grad_norm"] > 1.0 and unclipped > 1.0


def test_nan_loss_stops_with_a_one_line_error_before_checkpointing(tmp_path):
    task = ScriptedTask([0.1, 0.2])
    trainer = make_trainer(tmp_path, task, epochs=2)
    trainer.fit()
    task = ScriptedTask([0.1, 0.2], loss_scale=float("nan"))
    with pytest.raises(TrainingDivergedError, match="epoch 3: training loss is nan"):
        make_trainer(tmp_path, task, epochs=3).fit(resume=True)
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2


def test_unknown_selection_metric_names_the_available_ones(tmp_path):
    with pytest.raises(ConfigError, match="'mrr' is not a validation metric.*other, score"):
        make_trainer(tmp_path, ScriptedTask([0.1]), metric="mrr").fit()


def test_bf16_autocast_on_request(tmp_path):
    seen = []

    class RecordingTask(ScriptedTask):
        def training_step(self, model, batch):
            seen.append(model(self.inputs[batch]).dtype)
            return super().training_step(model, batch)

    make_trainer(tmp_path / "bf16", RecordingTask([0.1]), epochs=1, amp="bf16").fit()
    assert set(seen) == {torch.bfloat16}
    seen.clear()
    make_trainer(tmp_path / "auto", RecordingTask([0.1]), epochs=1, amp="auto").fit()
    assert set(seen) == {torch.float32}  # "auto" is off on the CPU


def test_batch_scheduler_steps_after_every_batch(tmp_path):
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    trainer = Trainer(model, ScriptedTask([0.1, 0.2]), optimizer,
                      TrainConfig(epochs=2, progress=False, device="cpu", metric="score"), tmp_path,
                      scheduler=scheduler, step_scheduler="batch")
    result = trainer.fit()
    assert [r["lr"] for r in result.history] == [1.0, 0.5**4]  # 4 batches per epoch
    with pytest.raises(ConfigError, match="step_scheduler"):
        Trainer(model, ScriptedTask([]), optimizer, TrainConfig(), tmp_path, step_scheduler="step")


class FilteredMRRTask(OneToNTask):
    """1-N task with a small filtered-MRR validation (independent of imf_kg.evaluation)."""

    def validate(self, model):
        queries = self.kg.queries(self.eval_split)
        scores = model.score_tails(queries[:, 0], queries[:, 1]).float()
        target_scores = scores.gather(1, queries[:, 2:3])
        known = self.kg.filter_index.dense(queries[:, 0], queries[:, 1])
        known[torch.arange(len(queries)), queries[:, 2]] = False
        ranks = (scores.masked_fill(known, -math.inf) > target_scores).sum(1) + 1
        return {"mrr": float((1.0 / ranks.float()).mean())}


def test_distmult_learns_nations(tmp_path):
    kg = load_kg("nations")
    seed_everything(0)
    model = DistMult.from_kg(kg, dim=32, dropout=0.2)
    task = FilteredMRRTask(kg, model, batch_size=64)
    trainer = Trainer(model, task, torch.optim.Adam(model.parameters(), lr=0.01),
                      TrainConfig(epochs=8, progress=False, device="cpu", metric="mrr"), tmp_path)
    result = trainer.fit()
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.75 * losses[0]
    mrrs = [r["valid/mrr"] for r in result.history]
    assert max(mrrs) > mrrs[0] + 0.1 and result.best_metrics["mrr"] == max(mrrs)
    assert result.history[0]["queries"] == task.num_queries


def test_tensor_logs_are_averaged_like_float_logs(tmp_path):
    class TensorLogTask(ScriptedTask):
        def training_step(self, model, batch):
            loss, logs = super().training_step(model, batch)
            return loss, {"mse": loss.detach()}

    floats = make_trainer(tmp_path / "floats", ScriptedTask([0.1]), epochs=1).fit().history[0]
    tensors = make_trainer(tmp_path / "tensors", TensorLogTask([0.1]), epochs=1).fit().history[0]
    assert isinstance(tensors["train/mse"], float)
    assert tensors["train/mse"] == pytest.approx(floats["train/mse"])


def test_plateau_scheduler_steps_on_the_selection_metric(tmp_path):
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0)
    trainer = Trainer(model, ScriptedTask([0.5, 0.4, 0.3]), optimizer,
                      TrainConfig(epochs=3, progress=False, device="cpu", metric="score"), tmp_path, scheduler=plateau)
    assert [r["lr"] for r in trainer.fit().history] == [1.0, 1.0, 0.5]
