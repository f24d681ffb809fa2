"""Boxes bounded by the expert's own planes (2.2's prompts, 2.3's cross labels; issue 12).

A queried scan carries three orthogonal planes labeled by the expert. Any slice of another view crosses
two of them along two lines: the plane perpendicular to the slice's columns gives the object's extent
along the columns on one line of the slice, the plane perpendicular to its rows its extent along the
rows. The simulated expert (and a careful human) puts the planes through the middle of the object, so
those two segments span roughly the object's box on that slice, and the planes' extent along the view's
own axis says which slices hold the object at all. An early teacher over-segments along structures
that touch the object (veins, vessels): its boxes reach along them far beyond the object. On a labeled
scan, :class:`ExpertExtent` bounds every box by the expert's segments plus a margin, makes it cover the
segments (an under-segmenting teacher's box is stretched to them), drops slices more than the margin
beyond the object's extent along the view, and prompts slices where the teacher is empty but both
segments are known.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

Range = tuple[int, int]  # inclusive (first, last) index


def _extent(line: np.ndarray) -> Range | None:
    idx = np.flatnonzero(np.asarray(line) > 0)
    return None if idx.size == 0 else (int(idx[0]), int(idx[-1]))


def _in_plane(axis: int, plane_axis: int) -> int:
    """The axis number of volume axis ``axis`` in the plane perpendicular to ``plane_axis``."""
    return axis if axis < plane_axis else axis - 1


def _union(a: Range | None, b: Range | None) -> Range | None:
    if a is None or b is None:
        return a if b is None else b
    return min(a[0], b[0]), max(a[1], b[1])


@dataclass(frozen=True)
class ExpertExtent:
    """The object's extent as the expert's three planes show it: ``planes[a]`` is the label of slice
    ``slices[a]`` along array axis a (foreground > 0; its axes are the volume's others, in order)."""

    slices: tuple[int, int, int]
    planes: tuple[np.ndarray, np.ndarray, np.ndarray]

    @classmethod
    def from_cross(cls, cross) -> "ExpertExtent":
        """From a :class:`nnunet_fmabs.annotation.pool.CrossAnnotation` (or anything with slices and planes)."""
        return cls(tuple(int(s) for s in cross.slices), tuple(np.asarray(p) for p in cross.planes))  # type: ignore

    def _line(self, plane_axis: int, axis: int, index: int) -> Range | None:
        """Extent, on the expert plane perpendicular to ``plane_axis``, of its line at ``index`` along ``axis``
        (the line runs along the third axis)."""
        plane, in_plane = self.planes[plane_axis], _in_plane(axis, plane_axis)
        if not 0 <= index < plane.shape[in_plane]:
            return None
        return _extent(np.take(plane, index, axis=in_plane))

    def along(self, axis: int) -> Range | None:
        """Indices along ``axis`` where either plane containing that axis shows the object."""
        out = None
        for plane_axis in range(3):
            if plane_axis == axis:
                continue
            out = _union(out, _extent(self.planes[plane_axis].any(axis=1 - _in_plane(axis, plane_axis))))
        return out

    def segments(self, axis: int, index: int) -> tuple[Range | None, Range | None]:
        """(rows, columns) extent of the object on slice ``index`` of view ``axis``, where the expert's planes
        cross that slice: rows from the plane perpendicular to the columns' axis, and vice versa."""
        rows_axis, cols_axis = (a for a in range(3) if a != axis)
        return self._line(cols_axis, axis, index), self._line(rows_axis, axis, index)


def bounded_box(box: tuple[int, int, int, int] | None, rows: Range | None, cols: Range | None,
                margin_px: Sequence[int], shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``box`` (x0, y0, x1, y1; None: the teacher is empty on this slice) bounded by the expert's segments:
    along each in-plane axis where a segment is known, clipped to it +- the margin and stretched to cover it.
    A slice the teacher missed gets the segments' box where both are known (else None: no prompt).
    ``margin_px``: (along x = columns, along y = rows)."""
    if box is None:
        if rows is None or cols is None:
            return None
        box = (cols[0], rows[0], cols[1], rows[1])
    x0, y0, x1, y1 = box
    mx, my = (int(m) for m in margin_px)
    if cols is not None:
        x0, x1 = _bound(x0, x1, cols, mx, shape[1])
    if rows is not None:
        y0, y1 = _bound(y0, y1, rows, my, shape[0])
    return x0, y0, x1, y1


def _bound(lo: int, hi: int, seg: Range, margin: int, size: int) -> Range:
    lo = min(max(lo, seg[0] - margin, 0), seg[0])
    hi = max(min(hi, seg[1] + margin, size - 1), seg[1])
    return lo, hi


class BoundedPrompts:
    """A recipe's prompts on one labeled scan, bounded by its :class:`ExpertExtent` with ``margin_mm``."""

    def __init__(self, extent: ExpertExtent, margin_mm: float, spacing: Sequence[float]):
        self.extent = extent
        self.margin_mm = float(margin_mm)
        self.spacing = tuple(float(s) for s in spacing)

    def _margin(self, axis: int) -> int:
        return int(np.floor(self.margin_mm / self.spacing[axis] + 1e-9))

    def candidates(self, axis: int, teacher_slices: np.ndarray, n_slices: int) -> np.ndarray:
        """The slices of view ``axis`` to prompt: the teacher's and those where both segments are known, within
        the margin of the object's extent along the view (all of the teacher's where the planes show none)."""
        span = self.extent.along(axis)
        if span is None:
            return np.asarray(teacher_slices, dtype=np.int64)
        lo, hi = max(span[0] - self._margin(axis), 0), min(span[1] + self._margin(axis), n_slices - 1)
        both = [i for i in range(span[0], span[1] + 1) if None not in self.extent.segments(axis, i)]
        out = np.union1d(np.asarray(teacher_slices, dtype=np.int64), np.asarray(both, dtype=np.int64))
        return out[(out >= lo) & (out <= hi)]

    def slice_prompt(self, axis: int, index: int, plane: np.ndarray, rng: np.random.Generator, growth, n_points):
        """The prompt of one slice (the teacher's ``plane`` there, maybe empty), or None."""
        from nnunet_fmabs.pseudolabels.prompts import SlicePrompt, box_from_mask, grow_box, sample_points

        rows_axis, cols_axis = (a for a in range(3) if a != axis)
        rows, cols = self.extent.segments(axis, index)
        box = bounded_box(box_from_mask(plane), rows, cols, (self._margin(cols_axis), self._margin(rows_axis)),
                          plane.shape)
        if box is None:
            return None
        inside = np.zeros_like(plane, dtype=bool)
        inside[box[1]:box[3] + 1, box[0]:box[2] + 1] = True
        grown = grow_box(box, plane.shape, rng, growth)
        return SlicePrompt(box=grown, points=sample_points(plane & inside, n_points, rng))
