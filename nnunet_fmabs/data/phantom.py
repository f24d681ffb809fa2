"""A synthetic nnU-Net raw dataset of 3D MRI-like scans of one organ, for CPU-scale experiments.

Each scan holds one organ (label 1): a smooth irregular blob, a randomly rotated ellipsoid whose
radius is modulated by a few low-frequency waves over the sphere, filling about 5-12 % of the
volume and kept away from the border. Around it, with the organ's brightness or brighter:

- a bright chest wall slab along one side, with air beyond it,
- 2-4 tubes ("veins") leaving the organ, as bright as the organ and touching it,
- 1-2 blobs ("vessels", "ventricles") next to the organ, a little darker or brighter,
- a textured background with brighter patches.

Then partial-volume blur, a smooth multiplicative bias field and Rician noise. The organ has
its own fine texture and a contrast edge against the background, so it can be told apart
locally (a box or point prompt on a slice is enough for a promptable 2D model), but neither a
global threshold nor the label's bounding box reaches 0.8 Dice (see :func:`baseline_dice`).

Everything is drawn from ``numpy.random.default_rng(SeedSequence([seed, split, index]))``: the
same seed gives identical arrays, and case ``i`` does not depend on ``n_train``/``n_test``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from nnunet_fmabs.data import _io

SPACING_MM = 1.25
"""Isotropic voxel spacing written into the phantom's NIfTI files."""
MIN_SIDE = 24
"""Smallest allowed side (voxels): the organ needs room for its size, a margin and the chest wall."""
BORDER_MARGIN = 3
"""The organ label stays at least this many voxels away from every face of the volume."""
INTENSITY_SCALE = 500.0
"""Organ intensity before bias and noise, in arbitrary MRI-like units."""
MAKER = "nnunet_fmabs.data.phantom"
_TRAIN, _TEST = 0, 1


def make_phantom(
    out_dir: str | os.PathLike,
    *,
    dataset_id: int = 991,
    name: str = "FMABSPhantom",
    n_train: int = 12,
    n_test: int = 4,
    shape: tuple[int, int, int] = (64, 64, 48),
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the phantom as nnU-Net raw dataset ``out_dir/Dataset{dataset_id:03d}_{name}``; return that folder.

    Layout: ``imagesTr/phantom_NNN_0000.nii.gz``, ``labelsTr/phantom_NNN.nii.gz``, the same for
    ``imagesTs``/``labelsTs`` (cases ``phantom_test_NNN``) and ``dataset.json`` (channel "MRI",
    labels background 0 / organ 1). ``shape`` is the NIfTI size (x, y, z), spacing
    :data:`SPACING_MM` mm. The folder appears only once complete; re-running replaces a phantom
    written before, and nothing else (:func:`nnunet_fmabs.data._io.staged_dataset`).

    Raises ``ValueError`` for a shape with a side below :data:`MIN_SIDE`, ``n_train < 1``,
    ``n_test < 0``, a negative seed or a bad dataset id/name.
    """
    shape = _check_shape(shape)
    n_train = _check_count("n_train", n_train, 1)
    n_test = _check_count("n_test", n_test, 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    folder_name = _io.check_dataset_args(dataset_id, name)

    jobs = [(_TRAIN, i, f"phantom_{i:03d}", "imagesTr", "labelsTr") for i in range(n_train)]
    jobs += [(_TEST, i, f"phantom_test_{i:03d}", "imagesTs", "labelsTs") for i in range(n_test)]
    spacing = (SPACING_MM,) * 3
    with _io.staged_dataset(out_dir, folder_name, MAKER) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for split, index, case, img_dir, lbl_dir in tqdm(jobs, desc=f"phantom {folder_name}", unit="case",
                                                        disable=not progress):
            image, label = phantom_case(shape, seed=int(seed), index=index, split=split)
            _io.write_nifti(image, tmp / img_dir / f"{case}_0000.nii.gz", spacing)
            _io.write_nifti(label, tmp / lbl_dir / f"{case}.nii.gz", spacing)
        _io.write_dataset_json(tmp, {
            "channel_names": {"0": "MRI"},
            "labels": {"background": 0, "organ": 1},
            "numTraining": n_train,
            "file_ending": ".nii.gz",
            "name": name,
            "description": "Synthetic MRI-like phantom of one organ with touching distractors, bias field "
                           "and Rician noise (nnunet-fmabs).",
            "reference": "synthetic, nnunet_fmabs.data.phantom",
            "licence": "CC0",
            "numTest": n_test,
            "spacing_mm": list(spacing),
            "shape_xyz": list(shape),
            "seed": int(seed),
            _io.MAKER_KEY: MAKER,
        })
    return Path(out_dir) / folder_name


def phantom_case(shape: Sequence[int], *, seed: int = 0, index: int = 0, split: int = _TRAIN
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One scan: (image float32, label uint8), both indexed [x, y, z] with shape ``shape``."""
    shape = _check_shape(shape)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(split), int(index)]))
    return _Case(shape, rng).render()


def baseline_dice(image: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Dice of two trivial segmenters, to show the phantom needs more than intensity or a box.

    ``threshold``: the best Dice over every global threshold ``image > t`` (the oracle choice of t).
    ``box``: the label's own bounding box, filled.
    """
    gt = np.asarray(label) > 0
    n_gt = int(gt.sum())
    if n_gt == 0:
        raise ValueError("label is empty")
    values = np.asarray(image, dtype=np.float64).ravel()
    order = np.argsort(-values, kind="stable")
    sorted_values = values[order]
    tp = np.cumsum(gt.ravel()[order])
    # only cut between distinct values: keep the last index of each run of equal values
    last = np.r_[sorted_values[1:] != sorted_values[:-1], True]
    k = np.arange(1, values.size + 1)
    dice = 2.0 * tp[last] / (k[last] + n_gt)
    coords = np.nonzero(gt)
    box_volume = math.prod(int(c.max()) - int(c.min()) + 1 for c in coords)
    return {"threshold": float(dice.max()), "box": 2.0 * n_gt / (n_gt + box_volume)}


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        sides = tuple(int(s) for s in shape)
        ok = len(sides) == 3 and all(float(s) == i for s, i in zip(shape, sides))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be three integers (x, y, z), got {shape!r}")
    if min(sides) < MIN_SIDE:
        raise ValueError(f"shape {sides} is too small for the organ: each side must be >= {MIN_SIDE} voxels")
    return sides


def _check_count(what: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _fibonacci_sphere(n: int) -> np.ndarray:
    """(3, n) unit vectors spread evenly over the sphere."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z ** 2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z])


_FIBONACCI_SPHERE = _fibonacci_sphere(4000)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma, mode="wrap")
    return field / max(float(field.std()), 1e-6)


class _Case:
    """Draws one scan; all randomness comes from ``rng`` in a fixed order."""

    def __init__(self, shape: tuple[int, int, int], rng: np.random.Generator):
        self.shape = shape
        self.rng = rng
        self.grid = np.indices(shape, dtype=np.float32)  # (3, X, Y, Z) voxel coordinates

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        rng, shape = self.rng, self.shape
        wall_axis, wall_side, wall_end, wall_occ, air_occ = self._chest_wall()
        organ_occ, center, axes_len, rotation, radius = self._organ(wall_axis, wall_side, wall_end)
        label = (organ_occ >= 0.5).astype(np.uint8)

        # background: soft tissue with a smooth texture and brighter patches ("fat", "muscle")
        image = 0.33 + 0.05 * _smooth_noise(rng, shape, 2.5)
        patches = np.clip((_smooth_noise(rng, shape, 4.0) - 0.7) * 2.0, 0.0, 1.0)
        image = image * (1 - patches) + rng.uniform(0.5, 0.6) * patches

        image = _blend(image, air_occ, 0.03)
        image = _blend(image, wall_occ, rng.uniform(1.2, 1.35) + 0.04 * _smooth_noise(rng, shape, 2.0))
        for _ in range(int(rng.integers(1, 3))):  # neighbouring blobs, a little darker or brighter
            level = rng.uniform(0.72, 0.85) if rng.random() < 0.5 else rng.uniform(1.12, 1.25)
            image = _blend(image, self._blob(center, axes_len, rotation, radius), level)
        for _ in range(int(rng.integers(2, 5))):  # tubes leaving the organ, as bright as the organ
            image = _blend(image, self._tube(center, axes_len, rotation, radius), rng.uniform(0.95, 1.05))
        organ_texture = 1.0 + 0.05 * _smooth_noise(rng, shape, 0.8) + 0.04 * _smooth_noise(rng, shape, 2.0)
        image = _blend(image, organ_occ, organ_texture)

        image = ndimage.gaussian_filter(image, 0.6)  # partial-volume blur of the scanner
        image = image * self._bias_field()
        sigma = rng.uniform(0.04, 0.07)
        n1 = rng.normal(size=shape).astype(np.float32)
        n2 = rng.normal(size=shape).astype(np.float32)
        image = np.sqrt((image + sigma * n1) ** 2 + (sigma * n2) ** 2)  # Rician magnitude noise
        return (image * INTENSITY_SCALE).astype(np.float32), label

    # -- structures ---------------------------------------------------------------------------
    def _chest_wall(self):
        """Air beyond a bright wall slab along one in-plane face of the volume (axes 0 or 1)."""
        rng, shape, grid = self.rng, self.shape, self.grid
        axis = int(rng.integers(0, 2))
        side = int(rng.integers(0, 2))  # 0: the wall is at index 0, 1: at the far end
        n = shape[axis]
        depth = grid[axis] if side == 0 else (n - 1) - grid[axis]
        undulation = np.clip(_smooth_noise(rng, shape, 6.0), -2.0, 2.0)
        air_end = rng.uniform(0.03, 0.05) * n
        wall_end = air_end + rng.uniform(0.07, 0.09) * n
        air_occ = np.clip(air_end + 0.6 * undulation - depth + 0.5, 0.0, 1.0)
        wall_occ = np.clip(wall_end + 1.0 * undulation - depth + 0.5, 0.0, 1.0)
        # depth (from the face) beyond which no wall voxel lies
        return axis, side, wall_end + 2.0 + 0.5, wall_occ, air_occ

    def _organ(self, wall_axis: int, wall_side: int, wall_end: float):
        rng, shape = self.rng, self.shape
        volume = math.prod(shape)
        fraction = rng.uniform(0.07, 0.12)
        r_eq = (3 * fraction * volume / (4 * math.pi)) ** (1 / 3)
        ratios = np.array([1.0, rng.uniform(0.75, 0.95), rng.uniform(0.6, 0.8)])
        axes_len = r_eq * ratios / np.prod(ratios) ** (1 / 3)
        rotations = [_random_rotation(rng) for _ in range(8)]
        n_waves = int(rng.integers(4, 7))
        waves = [(_unit(rng), rng.uniform(1.0, 2.5), rng.uniform(0, 2 * math.pi), rng.uniform(0.04, 0.08))
                 for _ in range(n_waves)]

        # room along each image axis: the rotated ellipsoid's half extent must fit between the
        # margins (and the chest wall plus a gap); shrink the organ if it does not
        lo = np.full(3, BORDER_MARGIN + 0.5)
        hi = np.array(shape, dtype=float) - 1 - BORDER_MARGIN - 0.5
        gap = 2.0
        if wall_side == 0:
            lo[wall_axis] = max(lo[wall_axis], wall_end + gap)
        else:
            hi[wall_axis] = min(hi[wall_axis], shape[wall_axis] - 1 - wall_end - gap)
        radius = lambda dirs: 1.0 + sum(a * np.cos(k * math.pi * np.tensordot(w, dirs, axes=1) + ph)  # noqa: E731
                                        for w, k, ph, a in waves)
        # the organ's extent on either side of its centre along each image axis, from its surface
        # sampled in many directions (the surface is smooth: add half a voxel for the sampling)
        # of 8 random orientations take the first that needs the least shrinking (in a flat
        # volume the organ lies flat rather than becoming tiny)
        local_surface = axes_len[:, None] * _FIBONACCI_SPHERE * radius(_FIBONACCI_SPHERE)[None, :]
        best = None
        for candidate in rotations:
            surface = candidate @ local_surface
            below, above = -surface.min(axis=1) + 0.5, surface.max(axis=1) + 0.5
            scale = min(1.0, float(np.min((hi - lo) / (below + above))))
            if best is None or scale > best[0] + 1e-9:
                best = (scale, candidate, below, above)
        scale, rotation, below, above = best
        axes_len, below, above = axes_len * scale, below * scale, above * scale
        center = np.array([rng.uniform(lo[i] + below[i], max(lo[i] + below[i], hi[i] - above[i]))
                           for i in range(3)])

        p = np.tensordot(rotation.T, self.grid - center[:, None, None, None].astype(np.float32), axes=1)
        q = p / axes_len[:, None, None, None]
        rho = np.sqrt((q ** 2).sum(axis=0))
        u = q / np.maximum(rho, 1e-6)
        # signed distance (voxels, approximately) to the surface rho = radius(u), positive inside
        local_scale = np.sqrt(((u * axes_len[:, None, None, None]) ** 2).sum(axis=0))
        sdf = (radius(u) - rho) * local_scale
        organ_occ = np.clip(sdf + 0.5, 0.0, 1.0).astype(np.float32)
        return organ_occ, center, axes_len, rotation, radius

    def _surface_point(self, center, axes_len, rotation, radius, direction_local) -> np.ndarray:
        d = np.asarray(direction_local, dtype=float)
        r = float(radius(d[:, None])[0])
        return center + rotation @ (axes_len * d * r)

    def _blob(self, center, axes_len, rotation, radius) -> np.ndarray:
        """An ellipsoid beside the organ, touching it or a few voxels away."""
        rng = self.rng
        d = _unit(rng)
        surface = self._surface_point(center, axes_len, rotation, radius, d)
        outward = surface - center
        outward /= np.linalg.norm(outward)
        size = float(np.mean(axes_len))
        radii = size * rng.uniform(0.3, 0.5, size=3)
        blob_center = surface + outward * (radii.mean() + rng.uniform(-1.0, 2.0))
        rot = _random_rotation(rng)
        p = np.tensordot(rot.T, self.grid - blob_center[:, None, None, None].astype(np.float32), axes=1)
        rho = np.sqrt(((p / radii[:, None, None, None]) ** 2).sum(axis=0))
        return np.clip((1.0 - rho) * radii.mean() + 0.5, 0.0, 1.0).astype(np.float32)

    def _tube(self, center, axes_len, rotation, radius) -> np.ndarray:
        """A curved tube starting inside the organ surface and running outwards."""
        rng = self.rng
        d = _unit(rng)
        start = center + 0.85 * (self._surface_point(center, axes_len, rotation, radius, d) - center)
        outward = start - center
        outward /= np.linalg.norm(outward)
        direction = outward + 0.4 * _unit(rng)
        direction /= np.linalg.norm(direction)
        bend = _unit(rng)
        bend -= bend.dot(direction) * direction
        length = float(np.mean(axes_len)) * rng.uniform(0.8, 1.4)
        tube_radius = rng.uniform(1.5, 2.6)
        ts = np.linspace(0.0, 1.0, max(8, int(length)))
        points = start[None] + length * (ts[:, None] * direction[None] + 0.35 * ts[:, None] ** 2 * bend[None])
        lo = np.maximum(np.floor(points.min(0) - tube_radius - 2), 0).astype(int)
        hi = np.minimum(np.ceil(points.max(0) + tube_radius + 3), self.shape).astype(int)
        occ = np.zeros(self.shape, np.float32)
        if np.any(hi <= lo):
            return occ
        region = tuple(slice(a, b) for a, b in zip(lo, hi))
        sub = self.grid[(slice(None),) + region]
        dist2 = np.full(sub.shape[1:], np.inf, np.float32)
        for pt in points:
            dist2 = np.minimum(dist2, ((sub - pt[:, None, None, None].astype(np.float32)) ** 2).sum(axis=0))
        occ[region] = np.clip(tube_radius - np.sqrt(dist2) + 0.5, 0.0, 1.0)
        return occ

    def _bias_field(self) -> np.ndarray:
        """exp of a random quadratic polynomial in normalized coordinates, max |log b| in [0.25, 0.4]."""
        rng, shape = self.rng, self.shape
        x = [(self.grid[i] / (shape[i] - 1)) * 2 - 1 for i in range(3)]
        log_b = sum(rng.normal(0, 1) * x[i] for i in range(3))
        log_b = log_b + sum(rng.normal(0, 0.6) * x[i] * x[j] for i in range(3) for j in range(i, 3))
        log_b = log_b - log_b.mean()
        log_b = log_b * (rng.uniform(0.25, 0.4) / max(float(np.abs(log_b).max()), 1e-6))
        return np.exp(log_b).astype(np.float32)


def _blend(image: np.ndarray, occupancy: np.ndarray, level) -> np.ndarray:
    return (image * (1 - occupancy) + level * occupancy).astype(np.float32)
