"""Teacher-prompted multi-view pseudo labels (2.2, Fig. 2): from the teacher mask P^t to Y_f.

For each view (array axes 0, 1, 2) and each slice where the teacher's object has foreground, the
object's box grown by a random 0-g mm (:class:`PromptRecipe`) and n random positive points prompt the
frozen generalist; its slice masks stack
into one 3D mask per view (Y_a, Y_c, Y_s), which UA or MV fuses into Y_f.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunet_fmabs.pseudolabels.fusion import fuse
from nnunet_fmabs.pseudolabels.prompts import (DEFAULT_RECIPE, PromptRecipe, prompt_object, teacher_object,
                                               teacher_prompts)


@dataclass
class VolumeLabels:
    """One scan's pseudo labels: the three view masks and their fusion Y_f (booleans, same shape);
    ``scores[v]`` maps each prompted slice index of view v to the generalist's predicted IoU (NaN for
    a generalist that gives none)."""

    views: tuple[np.ndarray, np.ndarray, np.ndarray]
    fused: np.ndarray
    n_prompted_slices: int
    scores: tuple[dict, dict, dict] = field(default_factory=lambda: ({}, {}, {}))


def label_volume(image: np.ndarray, teacher_mask: np.ndarray, generalist, rng: np.random.Generator, *,
                 spacing: Sequence[float] | None = None, fusion: str = "MV",
                 recipe: PromptRecipe | None = None, cache_key: tuple | None = None,
                 only_slices: Sequence[Sequence[int]] | None = None, extent=None) -> VolumeLabels:
    """Y_a, Y_c, Y_s from the generalist prompted by ``teacher_mask``, and Y_f = fuse(...) (2.2).

    ``image``: one channel of the scan (3D), on the teacher mask's grid; ``spacing``: mm per voxel along
    its axes (None: 1 mm, i.e. the recipe's millimetres are voxels); ``recipe``: how prompts are built
    (default :data:`DEFAULT_RECIPE`, the measured best); ``cache_key`` identifies the scan for the
    generalist's embedding cache (view and slice index are appended per slice); ``only_slices``: per
    view, the slice indices that may be prompted (None: every slice of the teacher's object); ``extent``: the
    expert's planes of a labeled scan (:class:`nnunet_fmabs.pseudolabels.expert_bounds.ExpertExtent`), which bound
    the boxes where the recipe's ``expert_bounds_mm`` is set.
    """
    if image.shape != teacher_mask.shape:
        raise ValueError(f"image {image.shape} and teacher mask {teacher_mask.shape} differ in shape")
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    teacher_mask = np.asarray(teacher_mask).astype(bool)
    obj = prompt_object(teacher_mask, recipe)  # once per scan: prompts and the limit of Y_f
    prompts_per_view = teacher_prompts(teacher_mask, rng, recipe, mm_per_voxel(spacing),
                                       only_slices=only_slices, obj=obj, extent=extent)
    views, scores = [], []
    n_prompted = 0
    for axis, prompts in enumerate(prompts_per_view):
        view = np.zeros(teacher_mask.shape, dtype=bool)
        view_scores: dict[int, float] = {}
        if prompts:
            indices = [i for i, _ in prompts]
            slices = [np.ascontiguousarray(np.take(image, i, axis=axis)).astype(np.float32) for i in indices]
            boxes = np.array([p.box for _, p in prompts], dtype=np.float64)
            points = [np.asarray(p.points, dtype=np.float64) for _, p in prompts]
            keys = None if cache_key is None else [(*cache_key, axis, int(i)) for i in indices]
            masks, ious = _segment(generalist, slices, boxes, points, keys)
            for i, m, score in zip(indices, masks, ious):
                index = [slice(None)] * 3
                index[axis] = i
                view[tuple(index)] = m
                view_scores[int(i)] = float(score)
            n_prompted += len(indices)
        views.append(view)
        scores.append(view_scores)
    fused = smooth_fused(fuse(views, fusion), recipe, spacing)
    limit = None if recipe.limit_to_teacher_mm is None else near_object(obj, recipe.limit_to_teacher_mm, spacing)
    if limit is not None:
        fused &= limit
    for _ in range(recipe.refine_steps):  # the generalist prompted again by its own Y_f
        if not fused.any():
            break
        again = label_volume(image, fused, generalist, rng, spacing=spacing, fusion=fusion,
                             recipe=recipe.with_(refine_steps=0, core_mm=0.0, limit_to_teacher_mm=None),
                             cache_key=cache_key, only_slices=only_slices)
        views, scores, fused = list(again.views), list(again.scores), again.fused
        n_prompted += again.n_prompted_slices
        if limit is not None:
            fused &= limit
    return VolumeLabels(tuple(views), fused, n_prompted, tuple(scores))  # type: ignore[arg-type]


def label_from_expert_planes(image: np.ndarray, extent, generalist, rng: np.random.Generator, *,
                             spacing: Sequence[float] | None = None, fusion: str = "MV",
                             recipe: PromptRecipe | None = None, cache_key: tuple | None = None) -> VolumeLabels:
    """Y_f of a scan the expert labeled, the generalist prompted by the expert's planes alone (issue 12).

    ``extent``: the scan's :class:`~nnunet_fmabs.pseudolabels.expert_bounds.ExpertExtent`. Every slice of a view
    where the two other planes cross the object gets one box, that of the two segments, grown by 0..the recipe's
    ``expert_prompt_growth_mm`` per side (the planes run through the object's middle and under-span a non-convex
    object, which the growth makes up for); the teacher plays no part, so Y_f is not limited to it and can be made
    before training starts. Then fused as :func:`label_volume` does.
    """
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    growth = recipe.box_growth_mm if recipe.expert_prompt_growth_mm is None else recipe.expert_prompt_growth_mm
    planes_only = recipe.with_(name=recipe.name, box_growth_mm=growth, limit_to_teacher_mm=None, core_mm=0.0,
                               refine_steps=0, expert_bounds_mm=0.0, expert_prompt_growth_mm=None)
    return label_volume(image, np.zeros(np.shape(image), dtype=bool), generalist, rng, spacing=spacing,
                        fusion=fusion, recipe=planes_only, cache_key=cache_key, extent=extent)


def label_volume_fine(fine_image: np.ndarray, teacher_mask: np.ndarray, generalist, rng: np.random.Generator,
                      index_maps: Sequence[np.ndarray], *, fine_spacing: Sequence[float],
                      spacing: Sequence[float] | None = None, fusion: str = "MV", recipe: PromptRecipe | None = None,
                      cache_key: tuple | None = None) -> VolumeLabels:
    """Y_f on the teacher's (coarse) grid, the generalist prompted on slices of a finer image (issue 12, 6).

    ``index_maps[a][p]``: the index along axis a of ``fine_image`` nearest to the coarse index p (e.g. the
    raw image of a scan that nnU-Net resampled to a coarser training grid, ``CaseGeometry``). Only the fine
    slices at the coarse slices' positions are prompted, each at the fine in-plane resolution, so the
    generalist sees the scan's own detail for the same number of slices; the teacher is upsampled (nearest)
    to build the prompts, and the view masks are read back at the coarse voxels.
    """
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    maps = [np.asarray(m, dtype=np.int64) for m in index_maps]
    if len(maps) != 3 or any(m.shape != (n,) for m, n in zip(maps, teacher_mask.shape)):
        raise ValueError(f"index_maps must give one fine index per coarse index of {teacher_mask.shape}")
    if any(m.min() < 0 or m.max() >= n for m, n in zip(maps, fine_image.shape)):
        raise ValueError(f"index_maps point outside the fine image {fine_image.shape}")
    nearest = [_nearest_coarse(m, n) for m, n in zip(maps, fine_image.shape)]
    fine_teacher = np.asarray(teacher_mask, dtype=bool)[np.ix_(*nearest)]
    fine = label_volume(fine_image, fine_teacher, generalist, rng, spacing=fine_spacing, fusion=fusion,
                        recipe=recipe.with_(limit_to_teacher_mm=None, smooth_mm=0.0),  # both on the coarse Y_f
                        cache_key=cache_key, only_slices=[np.unique(m) for m in maps])
    grid = np.ix_(*maps)
    views = tuple(v[grid] for v in fine.views)
    scores = tuple({int(p): view_scores[int(r)] for p, r in enumerate(maps[a]) if int(r) in view_scores}
                   for a, view_scores in enumerate(fine.scores))
    fused = smooth_fused(fuse(views, fusion), recipe, spacing)
    if recipe.limit_to_teacher_mm is not None:
        fused &= near_object(prompt_object(teacher_mask, recipe), recipe.limit_to_teacher_mm, spacing)
    return VolumeLabels(views, fused, fine.n_prompted_slices, scores)  # type: ignore[arg-type]


def _nearest_coarse(index_map: np.ndarray, n_fine: int) -> np.ndarray:
    """For every fine index, the coarse index whose fine position is nearest (index_map increasing)."""
    if len(index_map) == 1:
        return np.zeros(n_fine, dtype=np.int64)
    midpoints = (index_map[:-1] + index_map[1:]) / 2.0
    return np.searchsorted(midpoints, np.arange(n_fine), side="right").astype(np.int64)


def mm_per_voxel(spacing: Sequence[float] | None) -> tuple[float, float, float]:
    """The grid's spacing as floats; None: 1 mm per voxel (a recipe's millimetres are then voxels)."""
    return (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)  # type: ignore[return-value]


def smooth_fused(fused: np.ndarray, recipe: PromptRecipe, spacing: Sequence[float] | None) -> np.ndarray:
    """Y_f with a smooth surface (the recipe's ``smooth_mm``; 0: ``fused`` unchanged).

    Stitched per-slice answers leave Y_f jagged from slice to slice and scattered with specks that no view
    agrees on as one object (real LA: 35 3D components per scan against the teacher's 10). The fused mask
    is blurred by a Gaussian of sigma ``smooth_mm`` (per axis in voxels of ``spacing``; None: 1 mm), kept
    where the blur is >= 0.5, and reduced to its main object (:func:`teacher_object` with the recipe's
    ``min_object_fraction``).
    """
    if recipe.smooth_mm <= 0 or not fused.any():
        return fused
    sigma = [recipe.smooth_mm / s for s in mm_per_voxel(spacing)]
    smooth = ndimage.gaussian_filter(fused.astype(np.float32), sigma=sigma, mode="constant") >= 0.5
    return teacher_object(smooth, recipe.min_object_fraction)


def near_object(obj: np.ndarray, mm: float, spacing: Sequence[float] | None) -> np.ndarray:
    """Voxels within ``mm`` of the object (the recipe's ``limit_to_teacher_mm`` around the teacher's object)."""
    if not obj.any():
        return obj
    return ndimage.distance_transform_edt(~obj, sampling=mm_per_voxel(spacing)) <= mm


def _segment(generalist, slices, boxes, points, keys):
    if hasattr(generalist, "predict"):
        return generalist.predict(slices, boxes, points, cache_keys=keys)
    masks = generalist.segment(slices, boxes, points)  # a minimal third-party generalist
    return masks, np.full(len(slices), np.nan)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Binary Dice; 1.0 when both are empty (used for logging pseudo-label quality in simulation)."""
    a = a.astype(bool)
    b = b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)
