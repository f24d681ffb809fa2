"""Atomic writes: a file is either the old version or the new one, never a torn one (invariant 3).

Everything that costs an expert's time or minutes of compute (pool, annotations, pseudo labels,
checkpoints) is written to a temporary file in the same folder, flushed to disk, then renamed.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

TEMP_PREFIX = ".tmp-"  # atomic_path's temporary files: <folder>/.tmp-<random>-<name>


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real name at the end so that writers that look at the extension still work
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; people share run folders
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def drop_leftovers(folder: str | os.PathLike) -> None:
    """Remove the temporary files that writers killed inside ``atomic_path`` (SIGKILL: no ``finally``) left
    in ``folder``. Only for a folder no live process is writing into."""
    for stray in Path(folder).glob(TEMP_PREFIX + "*"):
        stray.unlink()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Atomic write through any ``writer(tmp_path)`` (torch.save, SimpleITK.WriteImage, savefig)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files that a killed process left under ``folder`` (its renames never came)."""
    removed = []
    for tmp in Path(folder).rglob(".tmp-*"):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed
