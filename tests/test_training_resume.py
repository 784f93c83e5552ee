"""An interrupted and resumed run ends exactly where an uninterrupted one does (CPU, bit for bit)."""

from __future__ import annotations

import math

import pytest
import torch

from imf_kg.data import load_kg
from imf_kg.io import read_jsonl
from imf_kg.models.distmult import DistMult
from imf_kg.training import CheckpointError, OneToNTask, TrainConfig, Trainer, seed_everything
from imf_kg.training import trainer as trainer_module

EPOCHS = 4
TIMING_KEYS = {"train_time_s", "valid_time_s", "queries_per_s"}


@pytest.fixture(scope="module")
def nations():
    return load_kg("nations")


class FilteredMRRTask(OneToNTask):
    """1-N task whose validation is a small filtered MRR (both directions), independent of imf_kg.evaluation."""

    def validate(self, model):
        cpu_queries = self.kg.queries(self.eval_split)
        queries = cpu_queries.to(next(model.parameters()).device)  # the model may be on CUDA (test_training_device)
        scores = model.score_tails(queries[:, 0], queries[:, 1]).float()
        target_scores = scores.gather(1, queries[:, 2:3])
        known = self.kg.filter_index.dense(cpu_queries[:, 0], cpu_queries[:, 1]).to(scores.device)
        known[torch.arange(len(queries), device=scores.device), queries[:, 2]] = False
        ranks = (scores.masked_fill(known, -math.inf) > target_scores).sum(1) + 1
        return {"mrr": float((1.0 / ranks.float()).mean()), "hits@1": float((ranks == 1).float().mean())}


class CrashingTask(FilteredMRRTask):
    """Raises inside training at ``crash_epoch`` (a simulated power cut between two checkpoints)."""

    crash_epoch = None

    def train_batches(self, epoch, generator):
        for i, batch in enumerate(super().train_batches(epoch, generator)):
            if epoch == self.crash_epoch and i == 2:
                raise RuntimeError("simulated crash")
            yield batch


def build_trainer(kg, run_dir, model_seed=0, task_class=FilteredMRRTask, **config_kwargs):
    seed_everything(model_seed)
    model = DistMult.from_kg(kg, dim=16, dropout=0.3)  # dropout active: resuming must restore the RNG
    task = task_class(kg, model, batch_size=128)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    config = TrainConfig(**{"epochs": EPOCHS, "seed": 3, "progress": False, "device": "cpu", **config_kwargs})
    return Trainer(model, task, optimizer, config, run_dir, scheduler=scheduler)


def without_timings(history):
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in history]


def assert_same_parameters(model_a, model_b):
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


@pytest.fixture(scope="module")
def uninterrupted(nations, tmp_path_factory):
    trainer = build_trainer(nations, tmp_path_factory.mktemp("full"))
    result = trainer.fit()
    return trainer, result


def test_resumed_run_equals_uninterrupted_run(nations, uninterrupted, tmp_path):
    full_trainer, full = uninterrupted
    assert not full.interrupted and full.last_epoch == EPOCHS

    first = build_trainer(nations, tmp_path, stop_after_epoch=2)
    partial = first.fit()
    assert partial.interrupted and partial.last_epoch == 2
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 2

    # a fresh process: new model with other initial weights, new optimiser and scheduler
    second = build_trainer(nations, tmp_path, model_seed=123)
    resumed = second.fit(resume=True)

    assert not resumed.interrupted and resumed.last_epoch == EPOCHS
    assert_same_parameters(second.model, full_trainer.model)
    assert without_timings(resumed.history) == without_timings(full.history)
    assert resumed.best_epoch == full.best_epoch and resumed.best_metrics == full.best_metrics
    assert without_timings(read_jsonl(tmp_path / "metrics.jsonl")) == without_timings(full.history)
    assert second.optimizer.param_groups[0]["lr"] == full_trainer.optimizer.param_groups[0]["lr"]
    best_full = torch.load(full_trainer.checkpoint_dir / "best.pt", weights_only=True)
    best_resumed = torch.load(second.checkpoint_dir / "best.pt", weights_only=True)
    assert all(torch.equal(best_full[k], best_resumed[k]) for k in best_full)


def test_resume_after_crash_between_checkpoints(nations, uninterrupted, tmp_path):
    full_trainer, full = uninterrupted
    crashing = build_trainer(nations, tmp_path, task_class=CrashingTask, checkpoint_every=2)
    crashing.task.crash_epoch = 4  # last.pt is from epoch 2; epoch 3 is already in metrics.jsonl
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]

    second = build_trainer(nations, tmp_path, model_seed=99, checkpoint_every=2)
    resumed = second.fit(resume=True)
    assert_same_parameters(second.model, full_trainer.model)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    assert without_timings(resumed.history) == without_timings(full.history)


def test_resume_is_sensitive_to_the_random_state(nations, uninterrupted, tmp_path, monkeypatch):
    """Guards the test above: with dropout, skipping the RNG restore changes the final parameters."""
    full_trainer, _ = uninterrupted
    build_trainer(nations, tmp_path, stop_after_epoch=2).fit()
    monkeypatch.setattr(trainer_module.ckpt, "restore_rng_state", lambda state, generator=None: None)
    second = build_trainer(nations, tmp_path)
    second.fit(resume=True)
    differs = any(
        not torch.equal(a, b) for a, b in zip(second.model.state_dict().values(), full_trainer.model.state_dict().values())
    )
    assert differs


def test_resuming_a_finished_run_trains_nothing(nations, uninterrupted, tmp_path):
    first = build_trainer(nations, tmp_path, epochs=2)
    done = first.fit()
    again = build_trainer(nations, tmp_path, epochs=2, model_seed=5)
    result = again.fit(resume=True)
    assert result.last_epoch == 2 and without_timings(result.history) == without_timings(done.history)
    assert_same_parameters(again.model, first.model)


def test_resume_without_checkpoint_is_a_one_line_error(nations, tmp_path):
    trainer = build_trainer(nations, tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        trainer.fit(resume=True)


def test_resume_into_a_different_model_is_refused(nations, tmp_path):
    build_trainer(nations, tmp_path, epochs=1).fit()
    model = DistMult.from_kg(nations, dim=8)
    optimizer = torch.optim.Adam(model.parameters())
    trainer = Trainer(model, FilteredMRRTask(nations, model), optimizer,
                      TrainConfig(epochs=2, progress=False, device="cpu"), tmp_path)
    with pytest.raises(CheckpointError, match="do not fit this model"):
        trainer.fit(resume=True)
