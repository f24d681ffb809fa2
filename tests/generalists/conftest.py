"""Fixtures of the generalist tests: synthetic phantom slices and random-weight checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage


def phantom_slice(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A phantom-like MR slice and its ground truth.

    A smooth irregular bright blob with texture, a bright distractor of similar intensity
    beside it, a multiplicative bias field, blur, noise and an MR-like intensity range.
    """
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = height * rng.uniform(0.42, 0.58), width * rng.uniform(0.42, 0.58)
    base = min(height, width) * rng.uniform(0.16, 0.22)
    angle = np.arctan2(yy - cy, xx - cx)
    radius = base * (1 + sum(rng.uniform(0.04, 0.12) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
                             for k in (2, 3, 5)))
    truth = np.hypot(yy - cy, xx - cx) < radius
    direction = rng.uniform(0, 2 * np.pi)
    dy, dx = cy + 2.3 * base * np.sin(direction), cx + 2.3 * base * np.cos(direction)
    distractor = np.hypot((yy - dy) / 0.6, (xx - dx) / 1.0) < 0.55 * base
    distractor &= ~ndimage.binary_dilation(truth, iterations=3)
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    texture /= texture.std() + 1e-8
    image = 0.25 + 0.03 * texture
    image[truth] = 0.7 + 0.04 * texture[truth]
    image[distractor] = 0.65
    bias = 1 + 0.25 * ((xx / width - 0.5) * np.cos(direction) + (yy / height - 0.5) * np.sin(direction))
    image = ndimage.gaussian_filter(image * bias, 1.0) + rng.normal(0, 0.04, size=shape)
    return (image * 900 + 150).astype(np.float32), truth


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) of a mask, inclusive pixel indices, x = column."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


@pytest.fixture(scope="session")
def phantoms():
    """Six phantom slices of the sizes an LA volume's views have, and bigger ones."""
    rng = np.random.default_rng(7)
    shapes = [(112, 112), (112, 80), (80, 112), (160, 128), (300, 260), (96, 128)]
    slices, truths = zip(*(phantom_slice(rng, shape) for shape in shapes))
    return list(slices), list(truths), np.stack([mask_box(t) for t in truths])


# -- families with random weights, saved and loaded through the real checkpoint path ---------
from nnunet_fmabs.generalists.sam import MedSAM, SamViTB  # noqa: E402

TINY_ENCODER = (32, 2, 1, (1,))  # SAM's ViT at 1024 px, 32 channels, 2 blocks (one global)


class TinySam(SamViTB):
    """SAM ViT-B's code path with a tiny encoder (not registered: tests only)."""

    name = "test_tiny_sam"
    encoder = TINY_ENCODER


class TinyMedSAM(MedSAM):
    name = "test_tiny_medsam"
    encoder = TINY_ENCODER


def save_random_weights(cls, path, seed: int = 0):
    """Build ``cls``'s architecture with random weights (seeded) and save its state dict."""
    import torch

    torch.manual_seed(seed)
    model = cls.build()
    with torch.no_grad():  # SAM zero-initialises its position tables: make every tensor count
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not tensor.any():
                tensor.normal_(0, 0.02)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def random_checkpoints(tmp_path_factory):
    """name -> (class, checkpoint file with random weights) for every family."""
    from nnunet_fmabs.generalists.litemedsam import LiteMedSAM
    from nnunet_fmabs.generalists.mobilesam import MobileSAM

    folder = tmp_path_factory.mktemp("random_weights")
    classes = {"litemedsam": LiteMedSAM, "mobilesam": MobileSAM, "sam": TinySam, "medsam": TinyMedSAM}
    return {name: (cls, save_random_weights(cls, folder / f"{name}.pth", seed=i))
            for i, (name, cls) in enumerate(classes.items())}


THREE_SHAPES = [(112, 112), (112, 80), (150, 200)]


@pytest.fixture(scope="session")
def three_slices():
    """Three slices of different sizes with a bright rectangle, a box around it, two points in it, one negative."""
    rng = np.random.default_rng(3)
    slices = [rng.normal(100, 30, size=shape).astype(np.float32) for shape in THREE_SHAPES]
    for image in slices:  # a bright object for the prompts to point at
        h, w = image.shape
        image[h // 4: 3 * h // 4, w // 3: 2 * w // 3] += 120
    boxes = np.array([[w // 3 - 2, h // 4 - 2, 2 * w // 3 + 2, 3 * h // 4 + 2] for h, w in THREE_SHAPES], dtype=float)
    points = [np.array([[w // 2, h // 2], [w // 2 + 3, h // 2 - 4]], dtype=float) for h, w in THREE_SHAPES]
    negatives = [np.array([[2.0, 2.0]]) for _ in THREE_SHAPES]
    return slices, boxes, points, negatives
