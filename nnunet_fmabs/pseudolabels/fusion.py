"""Multi-view fusion of the generalist's pseudo labels into Y_f^SAM (paper section 2.2)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

FUSION_RULES = ("UA", "MV")
"""UA: unanimous agreement (all three views); MV: majority voting (at least two of three)."""

N_VIEWS = 3


def fuse(masks: Sequence[ArrayLike], rule: str) -> NDArray[np.bool_]:
    """Y_f^SAM from the three view-wise pseudo labels (Y_a, Y_c, Y_s), section 2.2.

    ``masks``: three 3D foreground masks of one shape (non-zero = foreground). ``rule``: "UA"
    (foreground where all three agree) or "MV" (where at least two do).
    """
    if rule not in FUSION_RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; known rules: {', '.join(FUSION_RULES)}")
    if len(masks) != N_VIEWS:
        raise ValueError(f"fusion needs {N_VIEWS} masks (one per view), got {len(masks)}")
    arrays = [np.asarray(mask) != 0 for mask in masks]
    shapes = {array.shape for array in arrays}
    if len(shapes) != 1:
        raise ValueError(f"view masks differ in shape: {[a.shape for a in arrays]}")
    if arrays[0].ndim != 3:
        raise ValueError(f"view masks must be 3D, got shape {arrays[0].shape}")
    votes = arrays[0].astype(np.uint8) + arrays[1] + arrays[2]
    needed = N_VIEWS if rule == "UA" else 2
    return votes >= needed


def apply_expert_labels(
    fused: ArrayLike, cross_label: ArrayLike, ignore_value: int
) -> NDArray[np.uint8]:
    """Y_f with the expert's cross-labels put back: on every voxel the expert labeled
    (cross_label != ignore_value and >= 0) the expert's class replaces the pseudo label.
    Returns a uint8 label volume."""
    fused_array = np.asarray(fused)
    cross = np.asarray(cross_label)
    if fused_array.shape != cross.shape:
        raise ValueError(f"fused {fused_array.shape} and cross_label {cross.shape} differ in shape")
    labeled = (cross != ignore_value) & (cross >= 0)
    expert = cross[labeled]
    if expert.size and expert.max() > np.iinfo(np.uint8).max:
        raise ValueError(f"expert label {expert.max()} does not fit in uint8")
    if fused_array.dtype != np.bool_ and fused_array.size and (
        fused_array.min() < 0 or fused_array.max() > np.iinfo(np.uint8).max
    ):
        raise ValueError("fused labels must lie in [0, 255]")
    out = fused_array.astype(np.uint8)
    out[labeled] = expert.astype(np.uint8)
    return out
