"""Teacher-prompted multi-view pseudo labels (2.2, Fig. 2): from the teacher mask P^t to Y_f.

For each view (array axes 0, 1, 2) and each slice where P^t has foreground, the object's box grown
by a random 0-10 px and n random positive points prompt the frozen generalist; its slice masks stack
into one 3D mask per view (Y_a, Y_c, Y_s), which UA or MV fuses into Y_f.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_fmabs.pseudolabels.fusion import fuse
from nnunet_fmabs.pseudolabels.prompts import volume_prompts


@dataclass
class VolumeLabels:
    """One scan's pseudo labels: the three view masks and their fusion Y_f (booleans, same shape)."""

    views: tuple[np.ndarray, np.ndarray, np.ndarray]
    fused: np.ndarray
    n_prompted_slices: int


def label_volume(image: np.ndarray, teacher_mask: np.ndarray, generalist, rng: np.random.Generator, *,
                 fusion: str = "MV", n_points: int = 5, max_box_growth: int = 10,
                 cache_key: tuple | None = None) -> VolumeLabels:
    """Y_a, Y_c, Y_s from the generalist prompted by ``teacher_mask``, and Y_f = fuse(...) (2.2).

    ``image`` is one channel of the preprocessed scan (3D); ``cache_key`` identifies the scan for
    the generalist's embedding cache (view and slice index are appended per slice).
    """
    if image.shape != teacher_mask.shape:
        raise ValueError(f"image {image.shape} and teacher mask {teacher_mask.shape} differ in shape")
    teacher_mask = teacher_mask.astype(bool)
    views = []
    n_prompted = 0
    for axis in range(3):
        view = np.zeros(teacher_mask.shape, dtype=bool)
        prompts = volume_prompts(teacher_mask, axis, rng, max_growth=max_box_growth, n_points=n_points)
        if prompts:
            indices = [i for i, _ in prompts]
            slices = [np.ascontiguousarray(np.take(image, i, axis=axis)).astype(np.float32) for i in indices]
            boxes = np.array([p.box for _, p in prompts], dtype=np.float64)
            points = [np.asarray(p.points, dtype=np.float64) for _, p in prompts]
            keys = None if cache_key is None else [(*cache_key, axis, int(i)) for i in indices]
            masks = _segment(generalist, slices, boxes, points, keys)
            for i, m in zip(indices, masks):
                index = [slice(None)] * 3
                index[axis] = i
                view[tuple(index)] = m
            n_prompted += len(indices)
        views.append(view)
    return VolumeLabels(tuple(views), fuse(views, fusion), n_prompted)  # type: ignore[arg-type]


def _segment(generalist, slices, boxes, points, keys):
    if hasattr(generalist, "predict"):
        masks, _scores = generalist.predict(slices, boxes, points, cache_keys=keys)
        return masks
    return generalist.segment(slices, boxes, points)  # a minimal third-party generalist


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Binary Dice; 1.0 when both are empty (used for logging pseudo-label quality in simulation)."""
    a = a.astype(bool)
    b = b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)
