"""Prompts for the 2D generalist from the teacher's mask P^t (paper section 2.2).

For each slice of a view where P^t has foreground: the object's bounding box grown by a random
0-10 pixels on each side, and points sampled at random inside the object. The paper's 0-10 px are
pixels of LA's native 0.625 mm grid: :class:`PromptRecipe` states the growth in mm and converts it
per view (:func:`growth_in_pixels`), and builds the prompts from the teacher's *object* (its main 3D
connected component(s), :func:`teacher_object`), not from every stray voxel it marks.

Coordinates follow SAM: x is the column (last axis of the 2D slice), y the row; boxes are
(x0, y0, x1, y1) with inclusive pixel indices. A slice of a volume is ``np.take(volume, i,
axis)``, so its rows and columns are the volume's remaining axes in order.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

BOX_MAX_GROWTH = 10
"""Largest random growth of each box side, in pixels of the paper's grid (section 2.2: 0-10 px)."""

PAPER_SPACING_MM = 0.625
"""The grid the paper's pixels are counted on (LA, isotropic 0.625 mm; section 3)."""

PAPER_BOX_GROWTH_MM = BOX_MAX_GROWTH * PAPER_SPACING_MM
"""The paper's 0-10 px growth in physical units: 0-6.25 mm per side."""

N_POINTS = 5
"""Points sampled inside the object per slice (the paper leaves the number open)."""

Box = tuple[int, int, int, int]
Growth = int | tuple[int, int]  # pixels per side, or (along x = columns, along y = rows)


@dataclass(frozen=True)
class PromptRecipe:
    """How the teacher mask P^t becomes box (+ point) prompts of the three views (2.2).

    ``box_growth_mm``: each box side grows by its own random 0..g mm, converted per view to the
    slice's pixels (:func:`growth_in_pixels`). ``object_filter``: prompt only the teacher's object,
    i.e. its 3D connected components of at least ``min_object_fraction`` of the largest one, and in
    each slice its 2D components of at least ``min_slice_fraction`` of the slice's largest one (stray
    blobs neither get a box of their own nor stretch the object's box). ``min_slice_area_mm2``: slices
    where the object is smaller than this get no prompt (the generalist is unreliable on specks).
    ``n_points``: positive points per slice; None lets the generalist decide (box-only families such
    as LiteMedSAM and MedSAM take none). ``limit_to_teacher_mm``: Y_f is kept only within this distance
    of the teacher's object (None: no limit); the generalist may trim the teacher and grow it by that
    much, not leak along the vessels and chambers around it. ``core_mm``: boxes (and points) are drawn
    around the object's core, the voxels deeper than this inside it (0: the object itself); an
    over-segmenting teacher's boxes shrink towards the structure, Y_f stays bounded by the object.
    ``refine_steps``: times the generalist is prompted again by its own Y_f (boxes of Y_f's object;
    decoder calls only where the embedding cache holds the slices), Y_f still bounded by the teacher's.
    ``smooth_mm``: Y_f's surface smoothed after fusion (:func:`nnunet_fmabs.pseudolabels.labeler.smooth_fused`:
    a Gaussian of this sigma in mm over the fused mask, kept where >= 0.5, then its main object with the
    ``min_object_fraction`` rule), so that stitched 2D answers leave no slice-to-slice jag and no specks for the
    student to learn (0: off, the paper's fused mask as is). ``expert_bounds_mm``: on a scan the expert labeled,
    every box is bounded by the object's extent on the expert's planes plus this margin
    (:mod:`nnunet_fmabs.pseudolabels.expert_bounds`; None: off, the teacher alone prompts).
    ``expert_prompt_growth_mm``: on a scan the expert labeled, the teacher does not prompt at all: the expert's
    planes alone do, one box per slice where two of them cross the object (the box of their two segments), grown
    by 0..this many mm per side, and Y_f is not limited to the teacher
    (:func:`nnunet_fmabs.pseudolabels.labeler.label_from_expert_planes`). Such a Y_f needs no teacher, so it can be
    made before training starts. None: off (the teacher prompts, bounded by ``expert_bounds_mm`` where set).
    """

    name: str = "custom"
    box_growth_mm: float = PAPER_BOX_GROWTH_MM
    object_filter: bool = True
    min_object_fraction: float = 0.1
    min_slice_fraction: float = 0.1
    min_slice_area_mm2: float = 0.0
    n_points: int | None = N_POINTS
    limit_to_teacher_mm: float | None = None
    core_mm: float = 0.0
    refine_steps: int = 0
    smooth_mm: float = 0.0
    expert_bounds_mm: float | None = None
    expert_prompt_growth_mm: float | None = None

    def __post_init__(self):
        if not (self.box_growth_mm >= 0 and math.isfinite(self.box_growth_mm)):
            raise ValueError(f"box_growth_mm must be a finite number >= 0, got {self.box_growth_mm!r}")
        for name in ("min_object_fraction", "min_slice_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.min_slice_area_mm2 < 0 or (self.n_points is not None and self.n_points < 0):
            raise ValueError("min_slice_area_mm2 and n_points must be >= 0")
        if not (isinstance(self.refine_steps, int) and self.refine_steps >= 0):
            raise ValueError(f"refine_steps must be an integer >= 0, got {self.refine_steps!r}")
        for name in ("core_mm", "smooth_mm"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.limit_to_teacher_mm is not None and not self.limit_to_teacher_mm >= 0:
            raise ValueError(f"limit_to_teacher_mm must be None or >= 0, got {self.limit_to_teacher_mm!r}")
        if self.expert_bounds_mm is not None and not (self.expert_bounds_mm >= 0 and math.isfinite(self.expert_bounds_mm)):
            raise ValueError(f"expert_bounds_mm must be None or a finite number >= 0, got {self.expert_bounds_mm!r}")
        if self.expert_prompt_growth_mm is not None and not (self.expert_prompt_growth_mm >= 0
                                                             and math.isfinite(self.expert_prompt_growth_mm)):
            raise ValueError("expert_prompt_growth_mm must be None or a finite number >= 0, got "
                             f"{self.expert_prompt_growth_mm!r}")

    def with_(self, **changes) -> "PromptRecipe":
        """A copy with some fields changed (named "custom" unless ``name`` is given)."""
        return replace(self, **{"name": "custom", **changes})

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        points = "the generalist's choice" if self.n_points is None else str(self.n_points)
        filt = (f"teacher's object (3D components >= {self.min_object_fraction:g} x largest, slice components >= "
                f"{self.min_slice_fraction:g} x largest)" if self.object_filter else "all teacher foreground")
        limit = ("no limit" if self.limit_to_teacher_mm is None
                 else f"kept within {self.limit_to_teacher_mm:g} mm of the teacher's object")
        if self.core_mm > 0:
            filt += f" without its outer {self.core_mm:g} mm"
        refine = f"; prompted again by its own Y_f {self.refine_steps}x" if self.refine_steps else ""
        smooth = (f"; Y_f smoothed (Gaussian sigma {self.smooth_mm:g} mm, main object)" if self.smooth_mm > 0
                  else "")
        if self.expert_prompt_growth_mm is not None:
            smooth += ("; labeled scans prompted by the expert's planes alone (boxes of their segments grown "
                       f"0-{self.expert_prompt_growth_mm:g} mm, no teacher)")
        elif self.expert_bounds_mm is not None:
            smooth += f"; on labeled scans boxes bounded by the expert's planes +- {self.expert_bounds_mm:g} mm"
        return (f"prompt recipe {self.name!r}: box of the {filt}, grown 0-{self.box_growth_mm:g} mm per side; "
                f"slices with an object under {self.min_slice_area_mm2:g} mm^2 unprompted; points: {points}; "
                f"Y_f {limit}{refine}{smooth}")


PAPER_RECIPE = PromptRecipe(name="paper", box_growth_mm=PAPER_BOX_GROWTH_MM, object_filter=True,
                            min_object_fraction=0.1, min_slice_fraction=0.0, min_slice_area_mm2=0.0,
                            n_points=N_POINTS)
"""Section 2.2 as written, defects fixed: object-specific box grown 0-10 px of 0.625 mm, 5 points."""

AUTHORS_BOX_GROWTH_MM = 4 * PAPER_SPACING_MM
"""The authors' released code grows boxes by 0-4 px of 0.625 mm: 2.5 mm."""

DEFAULT_RECIPE = PromptRecipe(name="default", box_growth_mm=AUTHORS_BOX_GROWTH_MM, object_filter=True,
                              min_object_fraction=0.1, min_slice_fraction=0.0, min_slice_area_mm2=0.0, n_points=None,
                              limit_to_teacher_mm=3.0, expert_bounds_mm=5.0)
"""The measured best recipe on real LA (benchmarks/pseudolabel_quality.py; table in benchmarks/README.md): the
teacher's object, boxes grown 0-2.5 mm, the generalist's own choice of points (none for LiteMedSAM), Y_f kept
within 3 mm of the teacher's object (the generalist trims an over-segmenting teacher but no longer leaks into
the vessels and chambers next to the atrium), and on a scan the expert labeled every box bounded by the object's
extent on the expert's three planes +- 5 mm (on LA Y_f 0.75-0.83 Dice against its teacher's 0.45-0.63 in every
round measured: benchmarks/README.md, la_table1, fifteenth and sixteenth sessions). ``expert_prompt_growth_mm``
(the planes alone, from before training) is off: as good a Y_f on LA, not yet better in training (seventeenth
session)."""

RECIPES = {"default": DEFAULT_RECIPE, "paper": PAPER_RECIPE}


@dataclass(frozen=True, eq=False)
class SlicePrompt:
    """Prompt of one slice: a box (x0, y0, x1, y1) and (k, 2) foreground points (x, y)."""

    box: Box
    points: NDArray[np.int64]

    @property
    def point_labels(self) -> NDArray[np.int64]:
        """SAM point labels: 1 (foreground) for every point."""
        return np.ones(len(self.points), dtype=np.int64)


def _as_mask2d(mask2d: ArrayLike) -> NDArray[np.bool_]:
    mask = np.asarray(mask2d) != 0
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    return mask


def box_from_mask(mask2d: ArrayLike) -> Box | None:
    """Tight bounding box (x0, y0, x1, y1) of the foreground, inclusive; None if empty."""
    mask = _as_mask2d(mask2d)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def growth_in_pixels(growth_mm: float, spacing2d: Sequence[float]) -> tuple[int, int]:
    """0..``growth_mm`` mm as whole pixels of a slice with ``spacing2d`` = (row mm, column mm):
    (along x = columns, along y = rows), rounded down (never more than ``growth_mm``)."""
    row_mm, col_mm = (float(v) for v in spacing2d)
    if row_mm <= 0 or col_mm <= 0:
        raise ValueError(f"spacing must be positive, got {tuple(spacing2d)}")
    return int(math.floor(growth_mm / col_mm + 1e-9)), int(math.floor(growth_mm / row_mm + 1e-9))


def grow_box(
    box: Box, shape: tuple[int, int], rng: np.random.Generator, max_growth: Growth = BOX_MAX_GROWTH
) -> Box:
    """Grow each side of ``box`` by its own random integer in [0, max_growth], clipped to a
    slice of ``shape`` (rows, columns). ``max_growth``: pixels, or (along x, along y)."""
    gx, gy = (max_growth, max_growth) if np.isscalar(max_growth) else (int(g) for g in max_growth)
    if gx < 0 or gy < 0:
        raise ValueError(f"max_growth must be >= 0, got {max_growth!r}")
    height, width = shape
    x0, y0, x1, y1 = box
    if not (0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height):
        raise ValueError(f"box {box} does not lie in a slice of shape {tuple(shape)}")
    g_left, g_right = (int(g) for g in rng.integers(0, gx + 1, size=2))
    g_top, g_bottom = (int(g) for g in rng.integers(0, gy + 1, size=2))
    return (
        max(0, x0 - g_left),
        max(0, y0 - g_top),
        min(width - 1, x1 + g_right),
        min(height - 1, y1 + g_bottom),
    )


def sample_points(mask2d: ArrayLike, n: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """min(n, foreground size) distinct foreground pixels drawn at random, as a (k, 2) array
    of (x, y)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    rows, cols = np.nonzero(_as_mask2d(mask2d))
    count = min(int(n), rows.size)
    picked = rng.choice(rows.size, size=count, replace=False) if count else np.empty(0, np.int64)
    return np.stack([cols[picked], rows[picked]], axis=1).astype(np.int64).reshape(count, 2)


def slice_prompts(
    mask2d: ArrayLike,
    rng: np.random.Generator,
    max_growth: Growth = BOX_MAX_GROWTH,
    n_points: int = N_POINTS,
) -> SlicePrompt | None:
    """Box (grown by 0-max_growth px per side) and points for one slice; None if it is empty."""
    mask = _as_mask2d(mask2d)
    box = box_from_mask(mask)
    if box is None:
        return None
    grown = grow_box(box, mask.shape, rng, max_growth)
    return SlicePrompt(box=grown, points=sample_points(mask, n_points, rng))


def volume_prompts(
    mask3d: ArrayLike,
    axis: int,
    rng: np.random.Generator,
    max_growth: Growth = BOX_MAX_GROWTH,
    n_points: int = N_POINTS,
) -> list[tuple[int, SlicePrompt]]:
    """Prompts for one view of P^t: (slice index, prompt) for every slice ``np.take(mask3d, i,
    axis)`` that has foreground, in increasing index order."""
    mask = np.asarray(mask3d) != 0
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    if axis not in (0, 1, 2, -1, -2, -3):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    axis = axis % 3
    others = tuple(a for a in range(3) if a != axis)
    prompts: list[tuple[int, SlicePrompt]] = []
    for index in np.flatnonzero(mask.any(axis=others)):
        prompt = slice_prompts(np.take(mask, index, axis=axis), rng, max_growth, n_points)
        if prompt is not None:  # always: the slice has foreground
            prompts.append((int(index), prompt))
    return prompts


def teacher_object(mask3d: ArrayLike, min_fraction: float = 0.1) -> NDArray[np.bool_]:
    """The teacher's object: its 3D connected components (26-connected) with at least
    ``min_fraction`` of the largest one's voxels (0: every component, i.e. the mask itself)."""
    mask = np.asarray(mask3d) != 0
    if min_fraction <= 0 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1
    return np.isin(labels, keep)


def prompt_object(mask3d: ArrayLike, recipe: PromptRecipe) -> NDArray[np.bool_]:
    """What the recipe prompts and bounds Y_f by: the teacher's object, or all its foreground."""
    mask = np.asarray(mask3d) != 0
    return teacher_object(mask, recipe.min_object_fraction) if recipe.object_filter else mask


def object_core(obj: ArrayLike, depth_mm: float, spacing: Sequence[float]) -> NDArray[np.bool_]:
    """The voxels of ``obj`` farther than ``depth_mm`` from the nearest voxel outside it (centre to centre,
    anisotropic ``spacing`` in mm; beyond the volume's border counts as outside)."""
    obj = np.asarray(obj) != 0
    if depth_mm <= 0 or not obj.any():
        return obj
    padded = np.pad(obj, 1)  # the volume's border counts as outside
    depth = ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
    return depth > depth_mm


def slice_object(mask2d: ArrayLike, min_fraction: float = 0.1) -> NDArray[np.bool_]:
    """A slice of the object without its specks: 2D components (8-connected) with at least
    ``min_fraction`` of the slice's largest component."""
    mask = _as_mask2d(mask2d)
    if min_fraction <= 0 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return np.isin(labels, np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1)


def teacher_prompts(
    mask3d: ArrayLike,
    rng: np.random.Generator,
    recipe: PromptRecipe = PAPER_RECIPE,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    n_points: int | None = None,
    only_slices: Sequence[Sequence[int]] | None = None,
    obj: NDArray[np.bool_] | None = None,
    extent=None,
) -> list[list[tuple[int, SlicePrompt]]]:
    """Prompts of the three views (array axes 0, 1, 2) of P^t following ``recipe``; ``spacing``: mm per
    voxel along the mask's axes. ``n_points`` (when the recipe leaves it to the generalist): points per
    slice. ``only_slices``: per view, the slice indices that may be prompted (None: all). ``obj``: the
    object :func:`prompt_object` already computed for this mask (else computed here). ``extent``: the expert's
    planes of this scan (:class:`nnunet_fmabs.pseudolabels.expert_bounds.ExpertExtent`), used when the recipe's
    ``expert_bounds_mm`` is set.
    Returns, per view, (slice index, prompt) in increasing index order."""
    mask = np.asarray(mask3d) != 0
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing}")
    points = recipe.n_points if recipe.n_points is not None else (N_POINTS if n_points is None else n_points)
    obj = prompt_object(mask, recipe) if obj is None else obj
    bounds = None
    if extent is not None and recipe.expert_bounds_mm is not None:
        from nnunet_fmabs.pseudolabels.expert_bounds import BoundedPrompts

        bounds = BoundedPrompts(extent, recipe.expert_bounds_mm, spacing)
    if recipe.core_mm > 0:
        obj = object_core(obj, recipe.core_mm, spacing)
    views = []
    for axis in range(3):
        rows_mm, cols_mm = (spacing[a] for a in range(3) if a != axis)
        growth = growth_in_pixels(recipe.box_growth_mm, (rows_mm, cols_mm))
        min_pixels = recipe.min_slice_area_mm2 / (rows_mm * cols_mm)
        others = tuple(a for a in range(3) if a != axis)
        prompts = []
        candidates = np.flatnonzero(obj.any(axis=others))
        if only_slices is not None:
            candidates = candidates[np.isin(candidates, np.asarray(list(only_slices[axis]), dtype=np.int64))]
        if bounds is not None:
            candidates = bounds.candidates(axis, candidates, obj.shape[axis])
        for index in candidates:
            plane = np.take(obj, index, axis=axis)
            if recipe.object_filter:
                plane = slice_object(plane, recipe.min_slice_fraction)
            if plane.sum() < min_pixels:
                if bounds is None:
                    continue
                plane = np.zeros_like(plane)
            prompt = slice_prompts(plane, rng, growth, points) if bounds is None else \
                bounds.slice_prompt(axis, int(index), plane, rng, growth, points)
            if prompt is not None:
                prompts.append((int(index), prompt))
        views.append(prompts)
    return views
