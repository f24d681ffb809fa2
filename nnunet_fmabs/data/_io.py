"""Shared helpers of the dataset makers: NIfTI I/O in (x, y, z) order and an all-or-nothing dataset folder.

Array convention: every array here is indexed ``[x, y, z]``, so that ``array.shape`` equals the
NIfTI/ITK size. SimpleITK's ``GetImageFromArray`` reads the *last* axis as x, so we transpose
on the way in and out.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_fmabs import atomic

MAKER_KEY = "nnunet_fmabs_maker"
"""dataset.json key naming the module that wrote the dataset; only such folders are ever replaced."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


def to_sitk(array_xyz: np.ndarray, spacing: Sequence[float], origin: Sequence[float] | None = None) -> sitk.Image:
    """A SimpleITK image whose x axis is ``array_xyz``'s first axis."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array_xyz, (2, 1, 0))))
    image.SetSpacing(tuple(float(s) for s in spacing))
    if origin is not None:
        image.SetOrigin(tuple(float(o) for o in origin))
    return image


def from_sitk(image: sitk.Image) -> np.ndarray:
    """The voxel array of ``image`` indexed [x, y, z]."""
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def write_nifti(array_xyz: np.ndarray, path: Path, spacing: Sequence[float],
                origin: Sequence[float] | None = None) -> None:
    """Write a compressed NIfTI (array indexed [x, y, z], spacing in mm along x, y, z)."""
    sitk.WriteImage(to_sitk(array_xyz, spacing, origin), str(path), True)


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI as (array indexed [x, y, z], spacing along x, y, z)."""
    image = sitk.ReadImage(str(path))
    return from_sitk(image), tuple(image.GetSpacing())


def check_dataset_args(dataset_id: int, name: str) -> str:
    """Validate an nnU-Net dataset id and name; return the folder name ``Dataset{id:03d}_{name}``."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)) or not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be an integer in 1..999 (nnU-Net uses three digits), got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"name must be letters, digits, '_' or '-' (no spaces or slashes), got {name!r}")
    return f"Dataset{int(dataset_id):03d}_{name}"


def write_dataset_json(folder: Path, content: dict) -> None:
    atomic.write_json(folder / "dataset.json", content)


@contextmanager
def staged_dataset(out_dir: str | os.PathLike, folder_name: str, maker: str) -> Iterator[Path]:
    """Build a raw dataset in a hidden temporary folder and move it into place only on success.

    An existing ``out_dir/folder_name`` is replaced only when its dataset.json says that ``maker``
    wrote it (re-running the same command); anything else there, or another folder with the same
    dataset id (nnU-Net would refuse the ambiguous id), raises ``FileExistsError`` before any work.
    A crash leaves the previous dataset (or nothing), never a half-written one.
    """
    out_dir = Path(out_dir)
    target = out_dir / folder_name
    prefix = folder_name[: len("Dataset000")]
    if out_dir.is_dir():
        clashes = sorted(p.name for p in out_dir.iterdir()
                         if p.is_dir() and p.name.startswith(prefix + "_") and p.name != folder_name)
        if clashes:
            raise FileExistsError(
                f"{out_dir} already holds {clashes} with the same dataset id as {folder_name}; nnU-Net "
                f"cannot tell them apart. Pick another dataset_id or remove the other folder.")
    if target.exists() and not _replaceable(target, maker):
        raise FileExistsError(
            f"{target} exists and was not written by {maker}; refusing to overwrite it. Remove it or "
            f"choose another dataset_id/name.")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.tmp-", dir=out_dir))
    try:
        yield tmp
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{folder_name}.old-", dir=out_dir))
            os.replace(target, trash / folder_name)
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _replaceable(target: Path, maker: str) -> bool:
    if not target.is_dir():
        return False
    if not any(target.iterdir()):
        return True
    try:
        content = json.loads((target / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and content.get(MAKER_KEY) == maker
