"""Device resolution, seeding, the main-process notion, TrainConfig checks, and a CUDA run when present."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from imf_kg.config import apply_overrides
from imf_kg.errors import ConfigError
from imf_kg.training import TrainConfig, is_main_process, resolve_device, seed_everything
from imf_kg.training.device import autocast_dtype

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("tpu")
    with pytest.raises(ConfigError):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_asking_for_cuda_without_it_is_a_one_line_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_autocast_modes_on_cpu():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None
    assert autocast_dtype("off", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="amp"):
        autocast_dtype("fp8", cpu)


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(11)
    first = draw()
    seed_everything(11)
    assert draw() == first
    seed_everything(12)
    assert draw() != first
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_single_process_is_main():
    assert is_main_process()


@pytest.mark.parametrize("override, message", [
    ("epochs=0", "epochs: expected an integer >= 1"),
    ("patience=0", "patience"),
    ("grad_clip=-1", "grad_clip"),
    ("mode=maximise", "mode: expected one of 'max', 'min'"),
    ("amp=fp16", "amp: expected one of 'auto', 'bf16', 'off'"),
])
def test_train_config_rejects_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TrainConfig(), [override])


@pytest.mark.gpu
@cuda
def test_training_on_cuda_with_bf16_and_exact_resume(tmp_path):
    from test_training_resume import EPOCHS, build_trainer, without_timings  # same folder, pytest's rootdir import

    from imf_kg.data import load_kg

    kg = load_kg("nations")
    full = build_trainer(kg, tmp_path / "full", device="cuda")
    assert full.amp_dtype is torch.bfloat16 and next(full.model.parameters()).is_cuda
    full_result = full.fit()
    build_trainer(kg, tmp_path / "cut", device="cuda", stop_after_epoch=2).fit()
    resumed = build_trainer(kg, tmp_path / "cut", device="cuda", model_seed=7)
    result = resumed.fit(resume=True)
    assert result.last_epoch == EPOCHS and len(result.history) == len(full_result.history)
    for epoch, (a, b) in enumerate(zip(without_timings(result.history), without_timings(full_result.history)), 1):
        assert a == b, f"epoch {epoch}: " + str({k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)})
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
