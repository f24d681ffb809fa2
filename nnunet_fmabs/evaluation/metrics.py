"""Dice, Jaccard, 95 % Hausdorff distance and average surface distance, as in the paper's Table 1.

The four numbers come from ``medpy.metric.binary`` (``dc``, ``jc``, ``hd95``, ``asd``) called as
UA-MT, DeSCO and FM-ABS call them, ``metric(pred, gt)``: ``hd95`` is symmetric (95th percentile of
the surface distances both ways), ``asd`` is medpy's one-sided mean distance from the
prediction's surface to the ground truth's. Distances are reported twice: ``hd95``/``asd`` in
voxels (unit spacing, the paper's convention) and ``hd95_mm``/``asd_mm`` with the voxel spacing.

Empty masks (medpy raises on them; UA-MT's own code scores 0 distance for an empty prediction,
which rewards predicting nothing). Our convention:

============================  =====  =======  =====================================================
case                          dice   jaccard  hd95, asd (voxels / mm)
============================  =====  =======  =====================================================
both empty                    1      1        0
one of pred / gt empty        0      0        the image diagonal: sqrt(sum((n_i - 1)^2)) voxels,
                                              sqrt(sum(((n_i - 1) * s_i)^2)) mm -- the largest
                                              distance two voxels of the image can have, so the
                                              worst score a non-empty prediction could get
============================  =====  =======  =====================================================

Without a spacing, ``hd95_mm`` and ``asd_mm`` are NaN (JSON: null).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

METRICS = ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")
"""Keys of :func:`case_metrics`, in table order."""


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Metrics of one binary prediction against its ground truth (any non-zero voxel is foreground).

    ``spacing``: voxel size along each array axis of ``pred``/``gt`` (in that order; note that
    SimpleITK arrays are (z, y, x) while ``GetSpacing()`` is (x, y, z)). Returns
    ``{dice, jaccard, hd95, asd, hd95_mm, asd_mm}`` as floats; empty masks follow the convention
    in the module docstring.
    """
    from medpy.metric import binary

    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    if pred.ndim == 0 or pred.size == 0:
        raise ValueError(f"pred and gt must be non-empty arrays, got shape {pred.shape}")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != pred.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be {pred.ndim} positive numbers (one per array axis), got {spacing}")

    pred_any, gt_any = bool(pred.any()), bool(gt.any())
    nan = float("nan")
    if not pred_any and not gt_any:
        zero_mm = nan if spacing is None else 0.0
        return {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0, "hd95_mm": zero_mm, "asd_mm": zero_mm}
    if not pred_any or not gt_any:
        diag = image_diagonal(pred.shape)
        diag_mm = nan if spacing is None else image_diagonal(pred.shape, spacing)
        return {"dice": 0.0, "jaccard": 0.0, "hd95": diag, "asd": diag, "hd95_mm": diag_mm, "asd_mm": diag_mm}

    # Surface distances only involve the voxels of both masks: crop to their joint bounding box
    # grown by one voxel (clipped to the image, so border voxels erode exactly as before). This
    # gives medpy's numbers exactly, several times faster on a cropped LA scan.
    crop = _joint_box(pred, gt)
    pred_c, gt_c = pred[crop], gt[crop]
    result = {
        "dice": float(binary.dc(pred_c, gt_c)),
        "jaccard": float(binary.jc(pred_c, gt_c)),
        "hd95": float(binary.hd95(pred_c, gt_c)),
        "asd": float(binary.asd(pred_c, gt_c)),
        "hd95_mm": nan,
        "asd_mm": nan,
    }
    if spacing is not None:
        result["hd95_mm"] = float(binary.hd95(pred_c, gt_c, voxelspacing=spacing))
        result["asd_mm"] = float(binary.asd(pred_c, gt_c, voxelspacing=spacing))
    return result


def image_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Largest distance between two voxel centres of an image: the empty-mask distance score."""
    spacing = (1.0,) * len(shape) if spacing is None else spacing
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing))))


def _joint_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    either = a | b
    box = []
    for axis in range(either.ndim):
        other = tuple(i for i in range(either.ndim) if i != axis)
        hit = np.flatnonzero(either.any(axis=other))
        box.append(slice(max(int(hit[0]) - 1, 0), min(int(hit[-1]) + 2, either.shape[axis])))
    return tuple(box)


# -- folders ------------------------------------------------------------------------------------
class EvaluationError(ValueError):
    """A prediction is missing or does not fit its ground truth; the message names the file."""


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    *,
    labels: Iterable[int] = (1,),
    output_json: str | os.PathLike | None = None,
    file_ending: str = ".nii.gz",
) -> dict[str, Any]:
    """Score every ground truth ``gt_dir/<case><file_ending>`` against ``pred_dir/<case><file_ending>``.

    For each foreground label L in ``labels``, the masks ``pred == L`` and ``gt == L`` are scored
    with :func:`case_metrics`, spacing from the ground-truth image. Returns::

        {"labels": [1, ...], "metrics": [...], "n_cases": N, "pred_dir": ..., "gt_dir": ...,
         "cases": {case: {"1": {metric: value}}},
         "mean": {"1": {metric: mean}}, "std": {"1": {metric: std}},
         "foreground_mean": {metric: mean over labels of the per-label means}}

    (label keys are strings, as in JSON; std is the population std, ddof=0). Predictions without
    a ground truth are ignored with a warning. Raises :class:`EvaluationError` when a prediction
    is missing or differs from its ground truth in size, spacing, origin or direction, and when
    ``gt_dir`` holds no case. ``output_json``: also written there, atomically (NaN as null).
    """
    import SimpleITK as sitk

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    labels = [int(label) for label in labels]
    if not labels:
        raise ValueError("labels must name at least one foreground label")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels has duplicates: {labels}")
    for folder, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise EvaluationError(f"{what} folder not found: {folder}")
    gt_files = sorted(p for p in gt_dir.iterdir() if p.name.endswith(file_ending) and p.is_file())
    if not gt_files:
        raise EvaluationError(f"no ground truth '*{file_ending}' in {gt_dir}")
    case_ids = [p.name[: -len(file_ending)] for p in gt_files]
    extra = sorted(p.name for p in pred_dir.iterdir()
                   if p.name.endswith(file_ending) and p.name[: -len(file_ending)] not in set(case_ids))
    if extra:
        warnings.warn(f"{len(extra)} prediction(s) in {pred_dir} have no ground truth and are ignored: "
                      f"{extra[:5]}" + (" ..." if len(extra) > 5 else ""), stacklevel=2)
    missing = [str(pred_dir / p.name) for p in gt_files if not (pred_dir / p.name).is_file()]
    if missing:
        raise EvaluationError(f"missing prediction(s) for {len(missing)} case(s): {missing[:5]}"
                              + (" ..." if len(missing) > 5 else ""))

    cases: dict[str, dict[str, dict[str, float]]] = {}
    for case, gt_path in zip(case_ids, gt_files):
        pred_path = pred_dir / gt_path.name
        gt_image, pred_image = sitk.ReadImage(str(gt_path)), sitk.ReadImage(str(pred_path))
        _check_geometry(pred_image, gt_image, pred_path, gt_path)
        gt_array = sitk.GetArrayFromImage(gt_image)
        pred_array = sitk.GetArrayFromImage(pred_image)
        spacing = tuple(reversed(gt_image.GetSpacing()))  # array axes are (z, y, x)
        cases[case] = {str(label): case_metrics(pred_array == label, gt_array == label, spacing)
                       for label in labels}

    mean = {str(label): {m: float(np.mean([cases[c][str(label)][m] for c in cases])) for m in METRICS}
            for label in labels}
    std = {str(label): {m: float(np.std([cases[c][str(label)][m] for c in cases])) for m in METRICS}
           for label in labels}
    results = {
        "labels": labels,
        "metrics": list(METRICS),
        "n_cases": len(cases),
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "cases": cases,
        "mean": mean,
        "std": std,
        "foreground_mean": {m: float(np.mean([mean[str(label)][m] for label in labels])) for m in METRICS},
        "conventions": "hd95/asd in voxels (medpy, unit spacing), *_mm with the ground truth's spacing; "
                       "asd = medpy asd(pred, gt); empty pred or gt: dice 0, distances = image diagonal; "
                       "both empty: dice 1, distances 0",
    }
    if output_json is not None:
        from nnunet_fmabs import atomic

        atomic.write_json(output_json, _nan_to_none(results))
    return results


def _check_geometry(pred, gt, pred_path: Path, gt_path: Path) -> None:
    if pred.GetSize() != gt.GetSize():
        raise EvaluationError(f"{pred_path}: size {pred.GetSize()} differs from the ground truth {gt_path} "
                              f"size {gt.GetSize()}")
    if pred.GetNumberOfComponentsPerPixel() != 1:
        raise EvaluationError(f"{pred_path}: expected a label image with one component per voxel")
    for what, a, b, tol in (("spacing", pred.GetSpacing(), gt.GetSpacing(), 1e-4),
                            ("origin", pred.GetOrigin(), gt.GetOrigin(), 1e-3),
                            ("direction", pred.GetDirection(), gt.GetDirection(), 1e-4)):
        if not np.allclose(a, b, rtol=0, atol=tol):
            raise EvaluationError(f"{pred_path}: {what} {tuple(round(x, 6) for x in a)} differs from the "
                                  f"ground truth {gt_path} {what} {tuple(round(x, 6) for x in b)}")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- table --------------------------------------------------------------------------------------
_COLUMNS = (("dice", "Dice %", 100.0), ("jaccard", "Jaccard %", 100.0), ("hd95", "95HD vox", 1.0),
            ("asd", "ASD vox", 1.0), ("hd95_mm", "95HD mm", 1.0), ("asd_mm", "ASD mm", 1.0))


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_folders`' results: one row per case, then mean (std).

    Dice and Jaccard are shown in percent (as in the paper's Table 1), distances as stored. With
    several labels there is one block per label.
    """
    labels = [str(label) for label in results["labels"]]
    case_ids = list(results["cases"])
    width = max([len("mean (std)"), len("case")] + [len(c) for c in case_ids])
    header = f"{'case':<{width}}  " + "  ".join(f"{title:>15}" for _, title, _ in _COLUMNS)
    lines = []
    for label in labels:
        if len(labels) > 1:
            lines.append(f"label {label}")
        lines += [header, "-" * len(header)]
        for case in case_ids:
            row = results["cases"][case][label]
            lines.append(f"{case:<{width}}  " + "  ".join(f"{_fmt(row[k], f):>15}" for k, _, f in _COLUMNS))
        lines.append("-" * len(header))
        mean, std = results["mean"][label], results["std"][label]
        lines.append(f"{'mean (std)':<{width}}  " + "  ".join(
            f"{_fmt(mean[k], f) + ' (' + _fmt(std[k], f) + ')':>15}" for k, _, f in _COLUMNS))
        lines.append("")
    lines.append(f"{results['n_cases']} case(s); hd95/asd in voxels and mm; ASD = medpy asd(pred, gt); "
                 f"empty prediction: Dice 0, distances = image diagonal.")
    return "\n".join(lines)


def _fmt(value, factor: float) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value * factor:.2f}"
