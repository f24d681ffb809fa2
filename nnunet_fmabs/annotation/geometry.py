"""Index mapping between nnU-Net's preprocessed array of one case and its raw image.

nnU-Net v2 preprocesses a case in this order (``DefaultPreprocessor.run_case_npy``):

1. read the raw image into a numpy array in SimpleITK's order (z, y, x), i.e. raw numpy axis n
   is ITK index axis ``2 - n`` (ITK index order is i, j, k = x, y, z);
2. transpose it by the plans' ``transpose_forward``: transposed axis a is raw numpy axis
   ``transpose_forward[a]``;
3. crop to ``bbox_used_for_cropping`` (given in transposed coordinates, [start, stop) per axis);
4. resample the crop (shape ``shape_after_cropping_and_before_resampling``) to the preprocessed
   shape.

Resampling aligns voxel centres (skimage ``resize`` convention), so a preprocessed index p along
axis a corresponds to the cropped index ``c = round((p + 0.5) * n_cropped[a] / n_pp[a] - 0.5)``,
clipped to the crop, and back ``p = round((c + 0.5) * n_pp[a] / n_cropped[a] - 0.5)``. The plane
mappings below use these nearest-neighbour rules and nothing else; they are verified against
nnU-Net's own preprocessing and export in ``tests/annotation/test_geometry.py``.

Everything here is pure (properties and arrays in, indices and arrays out).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

VIEW_NAMES = ("sagittal", "coronal", "axial")
"""The plane shown when the index along physical axis x (L-R), y (A-P) or z (S-I) is fixed."""


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)


def preprocessed_to_cropped(index, n_cropped: int, n_preprocessed: int):
    """Nearest cropped index of preprocessed index/indices ``index`` along one axis (centre-aligned)."""
    p = np.asarray(index, dtype=np.float64)
    c = _round_half_up((p + 0.5) * (n_cropped / n_preprocessed) - 0.5)
    c = np.clip(c, 0, n_cropped - 1)
    return int(c) if c.ndim == 0 else c


def cropped_to_preprocessed(index, n_cropped: int, n_preprocessed: int):
    """Nearest preprocessed index of cropped index/indices ``index`` along one axis (centre-aligned)."""
    c = np.asarray(index, dtype=np.float64)
    p = _round_half_up((c + 0.5) * (n_preprocessed / n_cropped) - 0.5)
    p = np.clip(p, 0, n_preprocessed - 1)
    return int(p) if p.ndim == 0 else p


@dataclass(frozen=True)
class CaseGeometry:
    """Where the preprocessed array of one case sits in its raw image.

    ``shape_before_cropping``, ``bbox`` and ``shape_cropped`` are in transposed coordinates (as
    nnU-Net stores them); ``raw_shape`` is the raw numpy shape (z, y, x).
    """

    transpose_forward: tuple[int, int, int]
    shape_before_cropping: tuple[int, int, int]
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    shape_cropped: tuple[int, int, int]
    shape_preprocessed: tuple[int, int, int]

    @classmethod
    def from_properties(cls, properties: Mapping, transpose_forward: Sequence[int],
                        preprocessed_shape: Sequence[int]) -> "CaseGeometry":
        """From nnU-Net's ``<case>.pkl`` properties, the plans' ``transpose_forward`` and the case's
        preprocessed shape (3 spatial sizes; a leading channel axis is dropped)."""
        tf = tuple(int(i) for i in transpose_forward)
        if sorted(tf) != [0, 1, 2]:
            raise ValueError(f"transpose_forward must be a permutation of (0, 1, 2), got {transpose_forward}")
        missing = [k for k in ("shape_before_cropping", "bbox_used_for_cropping",
                               "shape_after_cropping_and_before_resampling") if k not in properties]
        if missing:
            raise ValueError(f"nnU-Net properties lack {missing}; is this a preprocessed <case>.pkl?")
        pp_shape = tuple(int(i) for i in preprocessed_shape)[-3:]
        before = tuple(int(i) for i in properties["shape_before_cropping"])
        bbox = tuple((int(a), int(b)) for a, b in properties["bbox_used_for_cropping"])
        cropped = tuple(int(i) for i in properties["shape_after_cropping_and_before_resampling"])
        if len(before) != 3 or len(bbox) != 3 or len(cropped) != 3 or len(pp_shape) != 3:
            raise ValueError("only 3D cases are supported")
        for a in range(3):
            lo, hi = bbox[a]
            if not (0 <= lo < hi <= before[a]) or hi - lo != cropped[a]:
                raise ValueError(f"inconsistent nnU-Net properties on axis {a}: bbox {bbox[a]}, "
                                 f"shape before cropping {before[a]}, after cropping {cropped[a]}")
        return cls(tf, before, bbox, cropped, pp_shape)  # type: ignore[arg-type]

    # -- axes ------------------------------------------------------------------------------------
    @property
    def transpose_backward(self) -> tuple[int, int, int]:
        return tuple(int(np.argsort(self.transpose_forward)[i]) for i in range(3))  # type: ignore[return-value]

    @property
    def raw_shape(self) -> tuple[int, int, int]:
        """Shape of the raw numpy array (SimpleITK order z, y, x)."""
        return tuple(self.shape_before_cropping[i] for i in self.transpose_backward)  # type: ignore[return-value]

    def raw_axis(self, axis: int) -> int:
        """Raw numpy axis of preprocessed axis ``axis``."""
        return self.transpose_forward[axis]

    def itk_axis(self, axis: int) -> int:
        """ITK index axis (0 = i, 1 = j, 2 = k) of preprocessed axis ``axis``."""
        return 2 - self.transpose_forward[axis]

    # -- single indices ----------------------------------------------------------------------------
    def pp_to_raw(self, axis: int, index: int) -> int:
        """Raw index (along raw numpy axis ``raw_axis(axis)``) of preprocessed index ``index``."""
        if not 0 <= index < self.shape_preprocessed[axis]:
            raise IndexError(f"preprocessed index {index} outside 0..{self.shape_preprocessed[axis] - 1} "
                             f"on axis {axis}")
        c = preprocessed_to_cropped(index, self.shape_cropped[axis], self.shape_preprocessed[axis])
        return int(c) + self.bbox[axis][0]

    def raw_to_pp(self, axis: int, raw_index: int) -> int | None:
        """Preprocessed index of a raw index along raw numpy axis ``raw_axis(axis)``; None outside the crop."""
        c = raw_index - self.bbox[axis][0]
        if not 0 <= c < self.shape_cropped[axis]:
            return None
        return int(cropped_to_preprocessed(c, self.shape_cropped[axis], self.shape_preprocessed[axis]))

    def pp_slices_to_raw(self, slices: Sequence[int]) -> list[dict]:
        """For each preprocessed axis a with slice ``slices[a]``: the raw numpy axis and index, and the
        ITK index axis (the index shown by viewers: i, j, k)."""
        out = []
        for a in range(3):
            r = self.pp_to_raw(a, int(slices[a]))
            out.append({"preprocessed_axis": a, "preprocessed_index": int(slices[a]),
                        "raw_axis": self.raw_axis(a), "itk_axis": self.itk_axis(a), "index": r})
        return out

    # -- index maps along whole axes -----------------------------------------------------------------
    def _pp_to_raw_map(self, axis: int) -> np.ndarray:
        """Raw (transposed) index of every preprocessed index along ``axis``."""
        n = self.shape_preprocessed[axis]
        return preprocessed_to_cropped(np.arange(n), self.shape_cropped[axis], n) + self.bbox[axis][0]

    def pp_index_maps(self) -> list[np.ndarray]:
        """Per preprocessed axis a, the index along axis a of the raw array transposed by ``transpose_forward``
        (uncropped) of every preprocessed index: ``raw.transpose(tf)[np.ix_(*maps)]`` is the raw image
        sampled on the preprocessed grid (nearest neighbour)."""
        return [np.asarray(self._pp_to_raw_map(a)) for a in range(3)]

    def _raw_to_pp_map(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed index of every raw (transposed) index along ``axis``, and where it is inside the crop."""
        r = np.arange(self.shape_before_cropping[axis])
        c = r - self.bbox[axis][0]
        inside = (c >= 0) & (c < self.shape_cropped[axis])
        p = cropped_to_preprocessed(np.clip(c, 0, self.shape_cropped[axis] - 1), self.shape_cropped[axis],
                                    self.shape_preprocessed[axis])
        return np.asarray(p), inside

    # -- planes ----------------------------------------------------------------------------------
    def _plane_raw_axes(self, axis: int) -> tuple[list[int], list[int]]:
        """The two other preprocessed axes (increasing) and the order of their raw numpy axes inside a raw plane."""
        others = [b for b in range(3) if b != axis]
        raw_remaining = sorted(self.raw_axis(b) for b in others)  # axes of np.take(raw, r, raw_axis)
        order = [raw_remaining.index(self.raw_axis(b)) for b in others]
        return others, order

    def raw_plane_to_pp(self, raw_plane: np.ndarray, axis: int) -> np.ndarray:
        """Nearest-neighbour resampling of a raw plane onto the preprocessed plane grid.

        ``raw_plane`` is ``np.take(raw_array, pp_to_raw(axis, p), axis=raw_axis(axis))`` (raw numpy
        layout); the result has the shape of ``np.take(pp_array, p, axis=axis)``.
        """
        others, order = self._plane_raw_axes(axis)
        raw_plane = np.asarray(raw_plane)
        expected = tuple(n for i, n in enumerate(self.raw_shape) if i != self.raw_axis(axis))
        if raw_plane.shape != expected:
            raise ValueError(f"raw plane has shape {raw_plane.shape}, expected {expected}")
        plane = np.transpose(raw_plane, order)
        return plane[np.ix_(self._pp_to_raw_map(others[0]), self._pp_to_raw_map(others[1]))]

    def pp_plane_to_raw(self, pp_plane: np.ndarray, axis: int, fill=0) -> np.ndarray:
        """Nearest-neighbour resampling of a preprocessed plane (``np.take(pp, p, axis)``) onto the raw
        plane grid (``np.take(raw, pp_to_raw(axis, p), raw_axis(axis))``); ``fill`` outside the crop."""
        others, order = self._plane_raw_axes(axis)
        pp_plane = np.asarray(pp_plane)
        expected = tuple(n for i, n in enumerate(self.shape_preprocessed) if i != axis)
        if pp_plane.shape != expected:
            raise ValueError(f"preprocessed plane has shape {pp_plane.shape}, expected {expected}")
        (p0, in0), (p1, in1) = self._raw_to_pp_map(others[0]), self._raw_to_pp_map(others[1])
        plane = np.where(np.logical_and.outer(in0, in1), pp_plane[np.ix_(p0, p1)], fill).astype(pp_plane.dtype)
        return np.transpose(plane, np.argsort(order))

    def pp_volume_to_raw(self, pp_volume: np.ndarray, fill=0) -> np.ndarray:
        """Nearest-neighbour export of a whole preprocessed array to the raw numpy array (z, y, x)."""
        pp_volume = np.asarray(pp_volume)
        if pp_volume.shape != self.shape_preprocessed:
            raise ValueError(f"preprocessed array has shape {pp_volume.shape}, expected {self.shape_preprocessed}")
        maps = [self._raw_to_pp_map(a) for a in range(3)]
        inside = maps[0][1][:, None, None] & maps[1][1][None, :, None] & maps[2][1][None, None, :]
        transposed = np.where(inside, pp_volume[np.ix_(maps[0][0], maps[1][0], maps[2][0])], fill)
        return transposed.astype(pp_volume.dtype).transpose(self.transpose_backward)


def view_names(direction: Sequence[float]) -> tuple[str, str, str]:
    """Viewer name of the plane obtained by fixing each ITK index axis (i, j, k).

    ``direction`` is ITK's 3x3 direction matrix, row-major (``image.GetDirection()``); column j is
    the physical (LPS) direction of index axis j. The index axis that follows L-R gives sagittal
    planes, A-P coronal, S-I axial. An oblique axis is named after its dominant component.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    return tuple(VIEW_NAMES[int(np.argmax(np.abs(d[:, j])))] for j in range(3))  # type: ignore[return-value]


def raw_numpy_index_to_itk(index: Sequence[int]) -> tuple[int, int, int]:
    """(z, y, x) numpy index of SimpleITK's array -> ITK index (i, j, k)."""
    return tuple(int(i) for i in reversed(index))  # type: ignore[return-value]
