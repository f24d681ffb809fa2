"""Prompts for the 2D generalist from the teacher's mask P^t (paper section 2.2).

For each slice of a view where P^t has foreground: the object's bounding box grown by a random
0-10 pixels on each side, and points sampled at random inside the object.

Coordinates follow SAM: x is the column (last axis of the 2D slice), y the row; boxes are
(x0, y0, x1, y1) with inclusive pixel indices. A slice of a volume is ``np.take(volume, i,
axis)``, so its rows and columns are the volume's remaining axes in order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

BOX_MAX_GROWTH = 10
"""Largest random growth of each box side, in pixels (section 2.2: 0-10 px)."""

N_POINTS = 5
"""Points sampled inside the object per slice (the paper leaves the number open)."""

Box = tuple[int, int, int, int]


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


def grow_box(
    box: Box, shape: tuple[int, int], rng: np.random.Generator, max_growth: int = BOX_MAX_GROWTH
) -> Box:
    """Grow each side of ``box`` by its own random integer in [0, max_growth], clipped to a
    slice of ``shape`` (rows, columns)."""
    if max_growth < 0:
        raise ValueError(f"max_growth must be >= 0, got {max_growth!r}")
    height, width = shape
    x0, y0, x1, y1 = box
    if not (0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height):
        raise ValueError(f"box {box} does not lie in a slice of shape {tuple(shape)}")
    g_left, g_top, g_right, g_bottom = (int(g) for g in rng.integers(0, max_growth + 1, size=4))
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
    max_growth: int = BOX_MAX_GROWTH,
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
    max_growth: int = BOX_MAX_GROWTH,
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
