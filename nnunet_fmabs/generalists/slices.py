"""Pure helpers shared by every family: a slice to 8 bits, prompts clipped to the slice.

Paper 2.2 / Fig. 3(c): the generalist answers slice by slice, prompted with the bounding box
of the teacher's mask and points inside it. Boxes are ``(x0, y0, x1, y1)`` in the slice's
pixel coordinates, x = column, inclusive indices (the upstream LiteMedSAM convention).
"""
from __future__ import annotations

import hashlib

import numpy as np

PERCENTILES = (0.5, 99.5)


def slice_to_uint8(image: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray | None:
    """A 2D slice of any range as uint8, as the upstream LiteMedSAM recipe turns MR into 8 bits.

    Clip to the 0.5-99.5 percentiles of the slice's finite pixels and rescale to 0-255
    (truncating, as ``np.uint8`` does upstream). Non-finite pixels become 0. If the percentiles
    coincide (an object smaller than 0.5 % of the slice), the finite min and max are used.
    Returns None for a slice without contrast (constant, or no finite pixel): nothing to segment.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"a slice must be 2D, got shape {image.shape}")
    values = image.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        return None
    lo, hi = np.percentile(values[finite], percentiles)
    if hi <= lo:
        lo, hi = values[finite].min(), values[finite].max()
        if hi <= lo:
            return None
    scaled = (np.clip(values, lo, hi) - lo) / (hi - lo) * 255.0
    scaled[~finite] = 0.0
    return scaled.astype(np.uint8)


def pixel_hash(image_u8: np.ndarray) -> str:
    """Cheap digest of the 8-bit pixels and shape (the input the image encoder sees)."""
    digest = hashlib.blake2b(image_u8.tobytes(), digest_size=16)
    digest.update(repr(image_u8.shape).encode())
    return digest.hexdigest()


def clip_box(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """Box clipped to the slice; None when it has zero area after clipping (or is not finite).

    Zero area: ``x1 <= x0`` or ``y1 <= y0`` once clipped, e.g. a box entirely outside.
    """
    box = np.asarray(box, dtype=np.float64).reshape(4)
    if not np.isfinite(box).all():
        return None
    height, width = shape
    x0, x1 = np.clip(box[[0, 2]], 0, width - 1)
    y0, y1 = np.clip(box[[1, 3]], 0, height - 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return np.array([x0, y0, x1, y1])


def clip_points(points: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """(k, 2) points ``(x, y)`` clipped to the slice; non-finite rows dropped; None -> (0, 2)."""
    if points is None:
        return np.zeros((0, 2))
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    points = points[np.isfinite(points).all(axis=1)]
    height, width = shape
    return np.stack([np.clip(points[:, 0], 0, width - 1), np.clip(points[:, 1], 0, height - 1)], axis=1)
