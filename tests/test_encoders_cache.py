"""The on-disk feature cache: keys, memory-mapped loads, damaged entries, concurrent builders."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from imf_kg.encoders.cache import FeatureCache, cache_key, default_cache_dir, hash_strings


def test_store_then_load_memory_mapped(tmp_path):
    cache = FeatureCache(tmp_path)
    values = np.random.default_rng(0).normal(size=(4, 3))
    parts = {"model": "m", "texts": "abc"}
    computed, hit = cache.get_or_compute("text", parts, lambda: values, rows=4)
    assert not hit and computed.dtype == np.float32 and isinstance(computed, np.memmap)  # the stored file, mapped
    np.testing.assert_array_equal(computed, values.astype(np.float32))
    loaded, hit = cache.get_or_compute("text", parts, lambda: pytest.fail("recomputed a cached entry"), rows=4)
    assert hit and isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, values.astype(np.float32))
    assert cache.path_for("text", parts).with_suffix(".json").is_file()
    assert cache.load("text", parts, rows=5) is None  # a row-count mismatch is a miss
    assert cache.load("text", {**parts, "model": "other"}) is None


def test_keys_depend_on_every_part_but_not_on_order():
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})
    assert cache_key({"a": 1, "b": 2}) != cache_key({"a": 1, "b": 3})
    assert hash_strings(["ab", "c"]) != hash_strings(["a", "bc"])
    assert hash_strings([None]) != hash_strings([""]) != hash_strings([])
    assert hash_strings(["x", None]) == hash_strings(["x", None])


def test_damaged_entry_is_rebuilt(tmp_path):
    cache = FeatureCache(tmp_path)
    parts = {"model": "m"}
    cache.path_for("image", parts).parent.mkdir(parents=True, exist_ok=True)
    cache.path_for("image", parts).write_bytes(b"\x93NUMPY truncated")
    values, hit = cache.get_or_compute("image", parts, lambda: np.ones((2, 2)))
    assert not hit and cache.load("image", parts) is not None


def test_concurrent_builders_leave_one_complete_entry(tmp_path):
    cache = FeatureCache(tmp_path)
    parts = {"model": "m"}
    values = np.arange(200_000, dtype=np.float32).reshape(1000, 200)
    barrier = threading.Barrier(4)
    errors = []

    def build():
        try:
            barrier.wait()
            cache.get_or_compute("text", parts, lambda: values, rows=1000)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    np.testing.assert_array_equal(cache.load("text", parts), values)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]  # no temporary files left


def test_default_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IMF_KG_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" and FeatureCache().directory == tmp_path / "c"
    monkeypatch.delenv("IMF_KG_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "imf_kg")
