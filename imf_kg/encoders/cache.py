"""On-disk cache of encoded feature matrices, shared by the text and image encoders.

Each entry is one ``.npy`` file named by a hash of its key (model identity, pooling, input hash, ...), with a
``.json`` sidecar that records the key for people. Entries are written to a temporary file in the cache folder
and renamed into place, so two processes that build the same entry at once both succeed, a reader never sees a
half-written file, and the last rename wins with identical content. Entries are loaded memory-mapped
(copy-on-write), so a large matrix costs no RAM until rows are touched.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from imf_kg.io import _atomic_write, atomic_write_json

CACHE_ENV = "IMF_KG_CACHE"


def default_cache_dir() -> Path:
    """``$IMF_KG_CACHE`` when set, else ``~/.cache/imf_kg``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "imf_kg"


def hash_strings(items: Iterable[str | None]) -> str:
    """SHA-256 of a sequence of optional strings; ``None`` and ``""`` hash differently, order matters."""
    digest = hashlib.sha256()
    for item in items:
        if item is None:
            digest.update(b"\x00N")
        else:
            data = item.encode("utf-8")
            # the length prefix keeps ["ab", "c"] and ["a", "bc"] apart
            digest.update(b"\x00S" + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def hash_file(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """SHA-256 of a file's content (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    """A stable hex key for a JSON-serialisable dict (key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32]


class FeatureCache:
    """A folder of cached ``(rows, dim)`` float32 matrices.

    Args:
        directory: cache folder (created on first write); ``None`` means :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()

    def path_for(self, kind: str, parts: dict[str, Any]) -> Path:
        return self.directory / f"{kind}-{cache_key({'kind': kind, **parts})}.npy"

    def load(self, kind: str, parts: dict[str, Any], rows: int | None = None) -> np.ndarray | None:
        """The cached matrix memory-mapped (copy-on-write), or ``None`` on a miss or an unreadable entry."""
        path = self.path_for(kind, parts)
        if not path.is_file():
            return None
        try:
            array = np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError):
            return None  # an entry damaged outside our atomic writes: treat as a miss and rebuild
        if array.ndim != 2 or (rows is not None and array.shape[0] != rows):
            return None
        return array

    def store(self, kind: str, parts: dict[str, Any], values: np.ndarray) -> Path:
        """Write ``values`` (converted to float32) atomically and record the key beside it."""
        path = self.path_for(kind, parts)
        values = np.ascontiguousarray(values, dtype=np.float32)
        _atomic_write(path, lambda handle: np.save(handle, values, allow_pickle=False))
        atomic_write_json(path.with_suffix(".json"), {"kind": kind, "shape": list(values.shape), **parts})
        return path

    def get_or_compute(
        self, kind: str, parts: dict[str, Any], compute: Callable[[], np.ndarray], rows: int | None = None
    ) -> tuple[np.ndarray, bool]:
        """``(values, hit)``: the cached matrix when present, else ``compute()`` stored then reloaded mapped."""
        cached = self.load(kind, parts, rows)
        if cached is not None:
            return cached, True
        values = compute()
        self.store(kind, parts, values)
        mapped = self.load(kind, parts, rows)  # the stored file, memory-mapped: the computed copy can be freed
        return (mapped if mapped is not None else np.asarray(values, dtype=np.float32)), False
