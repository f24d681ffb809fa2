"""EmbeddingCache: fp16 blosc2 files, atomic, keyed, bounded, shareable between runs."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from nnunet_fmabs.generalists import EmbeddingCache

EMBEDDING = np.random.default_rng(0).normal(size=(256, 64, 64)).astype(np.float32)


def test_roundtrip_is_fp16_and_compressed(tmp_path):
    cache = EmbeddingCache(tmp_path)
    assert cache.get("a") is None
    assert cache.put("a", EMBEDDING)
    stored = cache.get("a")
    assert stored.dtype == np.float16 and stored.shape == EMBEDDING.shape
    np.testing.assert_array_equal(stored, EMBEDDING.astype(np.float16))
    assert cache.size_bytes() < EMBEDDING.astype(np.float16).nbytes
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (1, 1, 1)
    assert not list(tmp_path.rglob("*.part"))  # written through a temporary file


def test_a_key_is_never_served_another_keys_embedding(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("a", EMBEDDING)
    cache.path_for("b").parent.mkdir(parents=True, exist_ok=True)
    os.replace(cache.path_for("a"), cache.path_for("b"))  # a file under b's name holding a's key
    assert cache.get("b") is None


def test_damaged_entry_is_a_miss_and_is_removed(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("a", EMBEDDING)
    path = cache.path_for("a")
    path.write_bytes(path.read_bytes()[:1000])
    assert cache.get("a") is None
    assert not path.exists()


def test_size_limit_evicts_the_least_recently_used(tmp_path):
    small = EMBEDDING[:16]
    entry = len(EmbeddingCache._encode("k0", small.astype(np.float16)))
    cache = EmbeddingCache(tmp_path, max_bytes=int(2.5 * entry))
    cache.put("k0", small)
    cache.put("k1", small)
    past = time.time() - 100
    os.utime(cache.path_for("k0"), (past, past))
    os.utime(cache.path_for("k1"), (past - 50, past - 50))
    cache.get("k1")  # a read refreshes k1: k0 is now the oldest
    assert cache.put("k2", small)
    assert cache.get("k0") is None and cache.get("k1") is not None and cache.get("k2") is not None
    assert cache.stats.evicted == 1
    assert cache.size_bytes() <= cache.max_bytes


def test_refuse_mode_stops_growing(tmp_path):
    small = EMBEDDING[:16]
    entry = len(EmbeddingCache._encode("k0", small.astype(np.float16)))
    cache = EmbeddingCache(tmp_path, max_bytes=int(1.5 * entry), on_full="refuse")
    assert cache.put("k0", small)
    assert not cache.put("k1", small)
    assert cache.get("k0") is not None and cache.get("k1") is None
    assert cache.stats.refused == 1
    assert not EmbeddingCache(tmp_path / "x", max_bytes=10).put("big", small)  # larger than the limit


def test_temporary_files_of_a_dead_run_are_removed(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=10**9)
    cache.put("a", EMBEDDING[:4])
    fresh, stale = cache.path_for("a").parent / ".tmp-1.emb.part", cache.path_for("a").parent / ".tmp-2.emb.part"
    fresh.write_bytes(b"being written")
    stale.write_bytes(b"left behind")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    EmbeddingCache(tmp_path, max_bytes=10**9).put("b", EMBEDDING[:4])  # a new run scans the folder
    assert fresh.exists() and not stale.exists()
    cache.clear()
    assert not list(tmp_path.rglob("*.emb*"))


def test_switched_off_cache_neither_reads_nor_writes(tmp_path):
    cache = EmbeddingCache(tmp_path, enabled=False)
    assert not cache.put("a", EMBEDDING)
    assert cache.get("a") is None
    assert not list(tmp_path.rglob("*.emb"))


def test_two_runs_share_a_folder(tmp_path):
    first, second = EmbeddingCache(tmp_path), EmbeddingCache(tmp_path)
    first.put("a", EMBEDDING)
    np.testing.assert_array_equal(second.get("a"), EMBEDDING.astype(np.float16))
    second.put("a", EMBEDDING)  # rewriting an entry another run holds is atomic and harmless
    assert first.get("a") is not None
    second.clear()
    assert first.get("a") is None


def test_bad_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="on_full"):
        EmbeddingCache(tmp_path, on_full="grow")


def test_a_flipped_byte_in_the_payload_is_a_miss(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("a", EMBEDDING)
    path = cache.path_for("a")
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert cache.get("a") is None
    assert not path.exists()


def test_entries_of_the_previous_format_are_still_read(tmp_path):
    import json

    import blosc2

    from nnunet_fmabs.generalists.cache import LEGACY_MAGIC

    cache = EmbeddingCache(tmp_path)
    header = json.dumps({"key": "a", "shape": list(EMBEDDING.shape), "dtype": "float16"}).encode()
    payload = blosc2.compress(EMBEDDING.astype(np.float16).tobytes(), typesize=2)
    path = cache.path_for("a")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(LEGACY_MAGIC + len(header).to_bytes(4, "little") + header + payload)
    np.testing.assert_array_equal(cache.get("a"), EMBEDDING.astype(np.float16))
