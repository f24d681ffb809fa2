"""Cross-labeling (paper section 2.3): the expert labels three orthogonal slices per scan.

A 3D label array has one slice index per array axis (0, 1, 2); which of them is axial, coronal
or sagittal depends on the image orientation and does not matter here: one plane per axis.
"""
from __future__ import annotations

import operator
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

SLICE_RULES = ("bbox_middle", "max_area", "centroid")
"""How the three slices are chosen from the dense ground truth (simulated expert)."""


def select_slices(dense_label: ArrayLike, rule: str = "bbox_middle") -> tuple[int, int, int]:
    """One slice index per axis (0, 1, 2) of a 3D label array (foreground = label > 0).

    - ``bbox_middle`` (default, as the authors' code): (min + max) // 2 of the foreground's
      bounding box along each axis;
    - ``max_area``: the slice with the most foreground voxels along each axis (ties: lowest index);
    - ``centroid``: the foreground's centre of mass, rounded half up.
    Without foreground every rule gives the middle slices shape // 2.
    """
    if rule not in SLICE_RULES:
        raise ValueError(f"unknown slice rule {rule!r}; known rules: {', '.join(SLICE_RULES)}")
    label = np.asarray(dense_label)
    if label.ndim != 3:
        raise ValueError(f"expected a 3D label array, got shape {label.shape}")
    foreground = label > 0
    if not foreground.any():
        return tuple(int(size // 2) for size in label.shape)  # type: ignore[return-value]
    indices: list[int] = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        area = foreground.sum(axis=others)
        if rule == "bbox_middle":
            occupied = np.flatnonzero(area)
            indices.append(int((occupied[0] + occupied[-1]) // 2))
        elif rule == "max_area":
            indices.append(int(np.argmax(area)))
        else:
            centre = float((area * np.arange(area.size)).sum() / area.sum())
            indices.append(int(np.floor(centre + 0.5)))
    return indices[0], indices[1], indices[2]


def cross_label(
    dense_label: ArrayLike, slices: Sequence[int], ignore_value: int
) -> NDArray[np.integer]:
    """Y^cl: the dense label on the three planes ``slices`` (one index per axis 0, 1, 2) and
    ``ignore_value`` everywhere else.

    The dtype is the label's, widened when needed to hold ``ignore_value``. Raises ValueError
    for an out-of-range index or when ``ignore_value`` is itself a label value.
    """
    label = np.asarray(dense_label)
    if label.ndim != 3:
        raise ValueError(f"expected a 3D label array, got shape {label.shape}")
    if len(slices) != 3:
        raise ValueError(f"need one slice index per axis (3), got {len(slices)}")
    ignore_value = operator.index(ignore_value)
    planes = [operator.index(index) for index in slices]
    for axis, (index, size) in enumerate(zip(planes, label.shape)):
        if not 0 <= index < size:
            raise ValueError(f"slice index {index} out of range [0, {size}) on axis {axis}")
    if np.any(label == ignore_value):
        raise ValueError(f"ignore_value {ignore_value} also occurs as a label value")
    from nnunet_fmabs.annotation.pool import CrossAnnotation  # one code path with the pool's volumes

    dtype = np.result_type(label.dtype, np.min_scalar_type(ignore_value))
    annotation = CrossAnnotation(tuple(planes), tuple(np.take(label, i, axis=a) for a, i in enumerate(planes)))
    return annotation.to_volume(label.shape, ignore_value, dtype=dtype)
