"""Helpers shared by the benchmark scripts: data location, dataset loading and peak-memory measurement."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IMF_KG_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_labelled_kg(folder: str | Path, unseen: str = "keep"):
    """A KnowledgeGraph from a folder of labelled ``train/valid/test.txt`` TSV files.

    Uses the toolkit's folder loader when it handles the folder; otherwise (while the data layer does not
    read folders yet) reads the three TSV files directly. ``unseen="keep"`` keeps valid/test triples whose
    entity never occurs in train (FB15k-237 has 28 such test triples), as the usual 1-N evaluation code does.
    Returns ``(kg, how)``, ``how`` naming the loader.
    """
    from imf_kg.data import load_kg
    from imf_kg.data.kg import KnowledgeGraph
    from imf_kg.errors import DataFormatError

    folder = Path(folder)
    try:
        return load_kg(str(folder), unseen=unseen), "imf_kg.data.load_kg"
    except Exception as error:  # the folder loader may be missing or still incomplete
        reason = f"{type(error).__name__}: {str(error)[:80]}"
    splits = {}
    for split in ("train", "valid", "test"):
        path = folder / f"{split}.txt"
        rows = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 3:
                    raise DataFormatError(path, line_number, f"{len(parts)} fields", "head<TAB>relation<TAB>tail")
                rows.append(tuple(parts))
        splits[split] = rows
    kg = KnowledgeGraph.from_labeled_triples(folder.name, splits, unseen=unseen)
    return kg, f"TSV read by the benchmark (load_kg failed: {reason})"


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak extra memory of a code block: host RSS sampled every ``interval`` seconds above its value at entry
    (tracemalloc does not see tensor storage), and on CUDA the peak of ``torch.cuda.max_memory_allocated``."""

    def __init__(self, device: str | torch.device = "cpu", interval: float = 0.002):
        self.device = torch.device(device)
        self.interval = interval
        self.peak_rss_bytes = 0
        self.peak_cuda_bytes = 0

    def __enter__(self) -> "PeakMemory":
        self._baseline = current_rss_bytes()
        self._peak = self._baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._cuda_baseline = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, current_rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, current_rss_bytes())
        self.peak_rss_bytes = self._peak - self._baseline
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_cuda_bytes = torch.cuda.max_memory_allocated(self.device) - self._cuda_baseline


def mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.1f} MiB"
