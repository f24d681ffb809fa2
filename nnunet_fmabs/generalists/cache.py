"""On-disk cache of image embeddings, so later pseudo-label rounds run only the mask decoder.

Paper 2.2: Y_f is recomputed in a few rounds during training; the slices are the same each
round, only the teacher's prompts change. Each slice's embedding is therefore computed at most
once and stored here: fp16, blosc2-compressed, one file per embedding, written atomically
(temporary file + ``os.replace``), so several runs can share one folder. The file name is a
SHA-256 of the full key, and the key is stored inside the file and compared on read: a
collision or a foreign file is a miss, never a wrong embedding. The generalist builds the key
(see :meth:`Generalist.embedding_key`); this class only stores bytes under it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

MAGIC = b"FMABSEMB2\n"  # 2: the header carries the payload's length and CRC-32
LEGACY_MAGIC = b"FMABSEMB1\n"  # still read (entries were written atomically), never written
SUFFIX = ".emb"
RESCAN_SECONDS = 10.0
STALE_PART_SECONDS = 3600.0  # a temporary file this old was left by a run that died mid-write


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0
    refused: int = 0
    evicted: int = 0


@dataclass
class EmbeddingCache:
    """Embeddings on disk under ``folder``, at most ``max_bytes`` in all.

    ``on_full``: ``"evict"`` removes the least recently used entries (reads refresh an entry's
    time) to make room; ``"refuse"`` stops adding. ``enabled=False`` turns the cache off
    (every lookup misses, nothing is written).
    """

    folder: str | os.PathLike
    max_bytes: int = 20 * 2**30
    enabled: bool = True
    on_full: Literal["evict", "refuse"] = "evict"
    stats: CacheStats = field(default_factory=CacheStats, init=False)

    def __post_init__(self) -> None:
        if self.on_full not in ("evict", "refuse"):
            raise ValueError(f"on_full must be 'evict' or 'refuse', got {self.on_full!r}")
        self.folder = Path(self.folder).expanduser()
        self._total = 0
        self._scanned_at = float("-inf")
        self._warned = False

    # -- layout -------------------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()
        return self.folder / name[:2] / (name + SUFFIX)

    def _entries(self) -> list[tuple[float, int, Path]]:
        entries = []
        if self.folder.is_dir():
            for path in self.folder.glob(f"*/*{SUFFIX}"):
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed by another run meanwhile
                    continue
                entries.append((stat.st_mtime, stat.st_size, path))
        return entries

    def size_bytes(self) -> int:
        """Bytes the cache holds on disk now (all runs sharing the folder)."""
        return sum(size for _, size, _ in self._entries())

    # -- read / write ---------------------------------------------------------------------
    def get(self, key: str) -> np.ndarray | None:
        """The embedding stored under ``key`` (float16), or None."""
        if not self.enabled:
            return None
        path = self.path_for(key)
        try:
            blob = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            self.stats.misses += 1
            return None
        array = self._decode(blob, key)
        if array is None:
            self.stats.misses += 1
            return None
        try:
            os.utime(path)  # least recently used goes first when evicting
        except OSError:
            pass
        self.stats.hits += 1
        return array

    def put(self, key: str, embedding: np.ndarray) -> bool:
        """Store ``embedding`` (as float16) under ``key``; False if off, full (refuse) or unwritable."""
        if not self.enabled:
            return False
        blob = self._encode(key, np.asarray(embedding, dtype=np.float16))
        if not self._make_room(len(blob)):
            self.stats.refused += 1
            return False
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX + ".part", dir=path.parent)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(blob)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as error:
            if not self._warned:
                warnings.warn(f"embedding cache {self.folder} not writable, continuing without it: {error}")
                self._warned = True
            return False
        self._total += len(blob)
        self.stats.writes += 1
        return True

    def clear(self) -> None:
        """Remove every entry (of every run sharing the folder)."""
        for _, _, path in self._entries():
            path.unlink(missing_ok=True)
        self._remove_parts(older_than=0.0)
        self._total = 0

    # -- internals ------------------------------------------------------------------------
    def _make_room(self, size: int) -> bool:
        if size > self.max_bytes:
            return False
        if self._total + size <= self.max_bytes and time.monotonic() - self._scanned_at < RESCAN_SECONDS:
            return True
        entries = self._entries()  # others may have written or evicted meanwhile
        self._scanned_at = time.monotonic()
        self._remove_parts(older_than=STALE_PART_SECONDS)
        self._total = sum(s for _, s, _ in entries)
        if self._total + size <= self.max_bytes:
            return True
        if self.on_full == "refuse":
            return False
        for _, entry_size, path in sorted(entries):
            try:
                path.unlink()
                self.stats.evicted += 1
            except FileNotFoundError:
                pass
            self._total -= entry_size
            if self._total + size <= self.max_bytes:
                return True
        return self._total + size <= self.max_bytes

    def _remove_parts(self, older_than: float) -> None:
        now = time.time()
        for part in self.folder.glob(f"*/.tmp-*{SUFFIX}.part") if self.folder.is_dir() else ():
            try:
                if now - part.stat().st_mtime >= older_than:
                    part.unlink()
            except FileNotFoundError:
                pass

    @staticmethod
    def _encode(key: str, array: np.ndarray) -> bytes:
        import blosc2

        payload = blosc2.compress(np.ascontiguousarray(array).tobytes(), typesize=2, clevel=1,
                                  filter=blosc2.Filter.SHUFFLE, codec=blosc2.Codec.ZSTD)
        header = json.dumps({"key": key, "shape": list(array.shape), "dtype": "float16",
                             "bytes": len(payload), "crc32": zlib.crc32(payload)}).encode()
        return MAGIC + len(header).to_bytes(4, "little") + header + payload

    def _decode(self, blob: bytes, key: str) -> np.ndarray | None:
        import blosc2

        try:
            checked = blob.startswith(MAGIC)
            if not checked and not blob.startswith(LEGACY_MAGIC):
                raise ValueError("bad magic")
            start = len(MAGIC) + 4
            length = int.from_bytes(blob[len(MAGIC):start], "little")
            header = json.loads(blob[start:start + length])
            if header["key"] != key:
                return None  # another entry under the same file name: a miss, not a wrong answer
            payload = blob[start + length:]
            # blosc2 may "decompress" a truncated chunk without complaint: check what was written
            if checked and (len(payload) != header["bytes"]
                            or zlib.crc32(payload) != header["crc32"]):
                raise ValueError("truncated or damaged payload")
            data = blosc2.decompress(payload)
            return np.frombuffer(data, dtype=np.float16).reshape(header["shape"])
        except Exception:  # a damaged entry is a miss; remove it so it is rewritten
            self.path_for(key).unlink(missing_ok=True)
            return None
