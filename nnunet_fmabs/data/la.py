"""Convert the left-atrium MRI (LA, 2018 Atrial Segmentation Challenge) from the UA-MT layout to nnU-Net.

The semi-supervised literature (UA-MT, SSL4MIS, DeSCO, FM-ABS) ships LA as::

    <root>/2018LA_Seg_Training Set/<case>/mri_norm2.h5    (note the space in the folder name)
    <root>/train.list                                      (one case name per line)
    <root>/test.list                                       (optional; or <test_root>/test.list)

with h5 keys ``image`` (float32, z-score normalized, axes x, y, z) and ``label`` (uint8, 0/1).
The spacing, isotropic 0.625 mm, is not stored in the files.

:func:`convert_la` writes an nnU-Net raw dataset: train.list cases to imagesTr/labelsTr and
test.list cases to imagesTs/labelsTs, NIfTI x = the h5's first axis, spacing 0.625 mm (or
resampled to ``spacing`` mm for CPU-scale experiments). Every problem with the input raises
:class:`LAConversionError` naming the file and what is wrong with it, and leaves no dataset behind.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from nnunet_fmabs.data import _io

LA_SPACING_MM = 0.625
"""Native isotropic voxel spacing of the LA scans (not stored in the h5 files)."""
IMAGE_FOLDER = "2018LA_Seg_Training Set"
H5_NAME = "mri_norm2.h5"
TRAIN_LIST, TEST_LIST = "train.list", "test.list"
MAKER = "nnunet_fmabs.data.la"


class LAConversionError(ValueError):
    """The LA input is missing or malformed; the message names the file and the problem."""


def convert_la(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dataset_id: int = 992,
    name: str = "LA",
    spacing: float | None = None,
    test_root: str | os.PathLike | None = None,
    cases: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """Convert LA in the UA-MT layout under ``root`` to ``out_dir/Dataset{dataset_id:03d}_{name}``; return it.

    - ``root`` holds ``train.list`` and the folder ``2018LA_Seg_Training Set``.
    - ``test.list`` is looked up in ``test_root`` (when given), then in ``root``; without one
      there is no test set (when ``test_root`` is given, a test.list is required). A test case's
      folder is looked up in ``<test_root>/<case>``, ``<test_root>/2018LA_Seg_Training Set/<case>``,
      then ``<root>/2018LA_Seg_Training Set/<case>``; a training case's in the last only.
    - ``spacing``: None keeps the native 0.625 mm grid; a value in mm resamples image (Gaussian
      anti-aliasing when coarsening, then linear) and label (nearest neighbour) to that isotropic
      spacing. The new grid keeps the first voxel's centre and covers the same field of view
      (size = old size * 0.625 / spacing, halves rounded up).
    - ``cases``: convert only these cases (names from the lists; unknown names are an error).

    Case identifiers are the folder names. Lists, folders, h5 keys and shapes are checked for
    every case before the first file is written, voxel values (finite image, label 0/1) as each
    case is read; either way a failure leaves no dataset folder behind (it appears only when
    complete, replacing an earlier conversion to the same folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise LAConversionError(f"LA root not found: {root} is not a folder")
    if spacing is not None:
        try:
            spacing = float(spacing)
        except (TypeError, ValueError):
            raise ValueError(f"spacing must be a number of mm or None, got {spacing!r}") from None
        if not np.isfinite(spacing) or spacing <= 0:
            raise ValueError(f"spacing must be a positive number of mm, got {spacing!r}")
    folder_name = _io.check_dataset_args(dataset_id, name)

    train_cases = read_case_list(_require_list(root, TRAIN_LIST))
    test_cases: list[str] = []
    test_bases, test_bare = [root], []
    if test_root is not None:
        test_root = Path(test_root)
        if not test_root.is_dir():
            raise LAConversionError(f"LA test root not found: {test_root} is not a folder")
        test_bases, test_bare = [test_root, root], [test_root]
        test_list = next((b / TEST_LIST for b in test_bases if (b / TEST_LIST).is_file()), None)
        if test_list is None:
            raise LAConversionError(
                f"missing list file: neither {test_root / TEST_LIST} nor {root / TEST_LIST} exists")
        test_cases = read_case_list(test_list)
    elif (root / TEST_LIST).is_file():
        test_cases = read_case_list(root / TEST_LIST)
    overlap = sorted(set(train_cases) & set(test_cases))
    if overlap:
        raise LAConversionError(f"cases listed both in {TRAIN_LIST} and {TEST_LIST}: {overlap[:5]}"
                                + (f" and {len(overlap) - 5} more" if len(overlap) > 5 else ""))
    if cases is not None:
        if isinstance(cases, str):
            raise TypeError("cases must be a list of case names, not one string")
        wanted = list(dict.fromkeys(str(c) for c in cases))
        unknown = [c for c in wanted if c not in set(train_cases) | set(test_cases)]
        if unknown:
            raise LAConversionError(f"cases not in {TRAIN_LIST}/{TEST_LIST}: {unknown}")
        train_cases = [c for c in train_cases if c in wanted]
        test_cases = [c for c in test_cases if c in wanted]
    if not train_cases:
        raise LAConversionError(f"no training case to convert (from {root / TRAIN_LIST}"
                                + (f", restricted to {cases}" if cases is not None else "") + ")")

    # locate every file first, so that a missing one fails before any work
    jobs = [(c, find_case_file(c, [root]), "imagesTr", "labelsTr") for c in train_cases]
    jobs += [(c, find_case_file(c, test_bases, bare_bases=test_bare), "imagesTs", "labelsTs") for c in test_cases]
    for case, h5_path, _, _ in jobs:
        _check_h5(h5_path)

    out_spacing = LA_SPACING_MM if spacing is None else spacing
    with _io.staged_dataset(out_dir, folder_name, MAKER) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for case, h5_path, img_dir, lbl_dir in tqdm(jobs, desc=f"LA -> {folder_name}", unit="case",
                                                   disable=not progress):
            image, label = load_la_case(h5_path)
            if spacing is not None:
                image, label = resample_case(image, label, LA_SPACING_MM, spacing)
            _io.write_nifti(image, tmp / img_dir / f"{case}_0000.nii.gz", (out_spacing,) * 3)
            _io.write_nifti(label, tmp / lbl_dir / f"{case}.nii.gz", (out_spacing,) * 3)
        _io.write_dataset_json(tmp, {
            "channel_names": {"0": "MRI"},
            "labels": {"background": 0, "left_atrium": 1},
            "numTraining": len(train_cases),
            "file_ending": ".nii.gz",
            "name": name,
            "description": "Left atrium, 2018 Atrial Segmentation Challenge GE-MRI, UA-MT preprocessing "
                           "(mri_norm2.h5), converted by nnunet-fmabs.",
            "reference": "Xiong et al., Medical Image Analysis 67, 2021",
            "numTest": len(test_cases),
            "spacing_mm": [out_spacing] * 3,
            "source_root": str(root.resolve()),
            _io.MAKER_KEY: MAKER,
        })
    return Path(out_dir) / folder_name


def read_case_list(path: str | os.PathLike) -> list[str]:
    """Case names of a UA-MT list file: one per line, blank lines and ``#`` comments skipped.

    A line that is a path (``.../<case>/mri_norm2.h5`` or ``.../<case>``) gives its case folder
    name. Duplicates are dropped, order kept.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise LAConversionError(f"cannot read list file {path}: {e}") from e
    names = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        parts = [p for p in entry.replace("\\", "/").split("/") if p]
        if parts and parts[-1] == H5_NAME:
            parts = parts[:-1]
        if not parts:
            raise LAConversionError(f"list file {path}: cannot read a case name from line {line!r}")
        names.append(parts[-1])
    return list(dict.fromkeys(names))


def find_case_file(case: str, bases: Sequence[Path], *, bare_bases: Sequence[Path] = ()) -> Path:
    """The ``mri_norm2.h5`` of ``case``: the first existing ``<base>/2018LA_Seg_Training Set/<case>``
    or ``<bare_base>/<case>`` folder, bare bases first."""
    folders = [Path(b) / case for b in bare_bases] + [Path(b) / IMAGE_FOLDER / case for b in bases]
    for folder in folders:
        if folder.is_dir():
            h5_path = folder / H5_NAME
            if not h5_path.is_file():
                raise LAConversionError(f"case folder {folder} has no {H5_NAME}")
            return h5_path
    where = ", ".join(str(f.parent) for f in folders)
    raise LAConversionError(f"case {case!r}: no folder {case} in {where}")


def _require_list(root: Path, list_name: str) -> Path:
    path = root / list_name
    if path.is_file():
        return path
    hint = ""
    if root.name == IMAGE_FOLDER:
        hint = f" (pass the folder that contains '{IMAGE_FOLDER}', not that folder itself)"
    raise LAConversionError(f"missing list file: {path} does not exist{hint}")


def _check_h5(h5_path: Path) -> None:
    """Validate keys and shapes without reading the voxels (label values are checked on load)."""
    import h5py

    try:
        with h5py.File(h5_path, "r") as f:
            for key in ("image", "label"):
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise LAConversionError(f"{h5_path}: no dataset '{key}' (keys: {sorted(f.keys())})")
            image_shape, label_shape = f["image"].shape, f["label"].shape
    except OSError as e:
        raise LAConversionError(f"{h5_path}: not a readable HDF5 file ({e})") from e
    if len(image_shape) != 3:
        raise LAConversionError(f"{h5_path}: 'image' must be 3D (x, y, z), got shape {image_shape}")
    if image_shape != label_shape:
        raise LAConversionError(
            f"{h5_path}: image and label shapes differ: image {image_shape}, label {label_shape}")


def load_la_case(h5_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8), both indexed [x, y, z] as stored, validated."""
    import h5py

    h5_path = Path(h5_path)
    _check_h5(h5_path)
    with h5py.File(h5_path, "r") as f:
        image = np.asarray(f["image"][...])
        label = np.asarray(f["label"][...])
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise LAConversionError(f"{h5_path}: 'image' must be real numbers, got dtype {image.dtype}")
    if not np.all(np.isfinite(image)):
        raise LAConversionError(f"{h5_path}: 'image' contains NaN or infinite values")
    values = np.unique(label)
    if not np.all(np.isin(values, [0, 1])):
        bad = [v.item() for v in values if v not in (0, 1)][:10]
        raise LAConversionError(f"{h5_path}: 'label' must hold only 0 and 1, found also {bad}")
    return image.astype(np.float32, copy=False), label.astype(np.uint8)


def resample_case(image: np.ndarray, label: np.ndarray, old_spacing: float, new_spacing: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Resample an isotropic [x, y, z] case to ``new_spacing`` mm (image linear, label nearest).

    The new grid starts at the same first voxel centre and has size n * old / new (halves rounded
    up), so it
    spans the same field of view; samples past the last old voxel take the nearest value. When
    coarsening, the image is first smoothed with sigma = (new/old - 1) / 2 voxels (as
    ``skimage.transform.resize(anti_aliasing=True)``) so that the new voxels average the old.
    """
    import SimpleITK as sitk

    factor = new_spacing / old_spacing
    size = [max(1, int(math.floor(n / factor + 0.5))) for n in image.shape]  # halves round up
    if factor > 1:
        image = ndimage.gaussian_filter(image.astype(np.float32), (factor - 1) / 2, mode="nearest")
    reference = sitk.Image(size, sitk.sitkUInt8)
    reference.SetSpacing((float(new_spacing),) * 3)
    out_image = sitk.Resample(_io.to_sitk(image, (old_spacing,) * 3), reference, sitk.Transform(),
                              sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)
    out_label = sitk.Resample(_io.to_sitk(label, (old_spacing,) * 3), reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8, True)
    return _io.from_sitk(out_image), _io.from_sitk(out_label)
