"""Shared fixtures. Real data lives in ../shared/data beside the repository and is never copied here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run of `make test` (CI must not fail by chance); run
# `HYPOTHESIS_PROFILE=explore pytest ...` to search new random examples, as a hunt for loader bugs.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# Tests are many small tensor operations: one intra-op thread avoids OpenMP spin-waiting and
# oversubscription (measured 10x faster on a loaded 2-core machine). IMF_KG_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("IMF_KG_TEST_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IMF_KG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; tests marked ``realdata`` skip with a message when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set IMF_KG_SHARED_DATA to point at it)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never touch the network: the Hugging Face hub is switched to offline mode."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
