"""Active-learning scores of one scan from the student's probabilities (paper section 2.3).

``probs`` is a (C, *spatial) array of class probabilities p_{c,v}^s (C >= 2), e.g. (C, X, Y, Z).
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

LC_QUANTILE = 0.25
"""LC averages the lowest quartile of the per-voxel confidences (section 2.3)."""


def _as_probs(probs: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim < 2 or array.shape[0] < 2:
        raise ValueError(f"probs must be (C, *spatial) with C >= 2 classes, got {array.shape}")
    if array[0].size == 0:
        raise ValueError("probs has no voxel")
    return array


def normalized_entropy(probs: ArrayLike) -> NDArray[np.float64]:
    """ne_v = -sum_c p_{c,v} log p_{c,v} / log|C|, per voxel, in [0, 1] (section 2.3).

    0 log 0 is taken as 0; a NaN probability gives NaN at its voxel. Returns an array of shape
    ``probs.shape[1:]``.
    """
    p = _as_probs(probs)
    p_log_p = p * np.log(np.where(p > 0, p, 1.0))  # p = 0 -> 0 * log 1 = 0; NaN stays NaN
    entropy = -p_log_p.sum(axis=0) / math.log(p.shape[0])
    return np.clip(entropy, 0.0, 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0


def least_confidence_score(probs: ArrayLike) -> float:
    """LC score (section 2.3): mean of the lowest quartile of the confidences max_c p_{c,v}.

    "Lowest quartile" = the ceil(N / 4) smallest confidences of the N voxels (so at least one).
    Lower is more informative. NaN if any probability is not finite.
    """
    p = _as_probs(probs)
    if not np.isfinite(p).all():
        return math.nan
    confidence = p.max(axis=0).ravel()
    count = math.ceil(confidence.size * LC_QUANTILE)
    lowest = np.partition(confidence, count - 1)[:count]
    return float(lowest.mean())


def entropy_score(probs: ArrayLike) -> float:
    """HE score (section 2.3): mean normalized entropy ne_v over the scan. Higher is more
    informative. NaN if any probability is not finite."""
    p = _as_probs(probs)
    if not np.isfinite(p).all():
        return math.nan
    return float(normalized_entropy(p).mean())


def entropy_ratio_score(probs: ArrayLike, beta: float) -> float:
    """HER score (section 2.3): fraction of voxels with ne_v > beta. Higher is more informative.
    NaN if any probability is not finite."""
    p = _as_probs(probs)
    if not np.isfinite(p).all():
        return math.nan
    return float((normalized_entropy(p) > beta).mean())
