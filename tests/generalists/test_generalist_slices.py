"""Pure helpers: intensity to 8 bits, prompt clipping, OpenCV's INTER_AREA resampling."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_fmabs.generalists.litemedsam import area_weights, resize_area, resized_shape_longest
from nnunet_fmabs.generalists.slices import clip_box, clip_points, pixel_hash, slice_to_uint8


def test_slice_to_uint8_clips_percentiles_and_uses_the_full_range():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, size=(100, 100))
    image[0, 0] = 1e6  # an outlier above the 99.5th percentile
    out = slice_to_uint8(image * 300 - 40)
    assert out.dtype == np.uint8 and out.shape == (100, 100)
    assert out.min() == 0 and out.max() == 255
    assert (out == 255).mean() < 0.01  # only the clipped top 0.5 %
    assert np.array_equal(slice_to_uint8(image), slice_to_uint8(image * 7 + 3))  # any intensity range


def test_slice_without_contrast_gives_none():
    assert slice_to_uint8(np.full((20, 30), 4.2)) is None
    assert slice_to_uint8(np.full((20, 30), np.nan)) is None
    partial = np.zeros((20, 30))
    partial[5, 5] = np.nan
    partial[10, 10:12] = 1.0  # under 0.5 % of the slice: percentiles coincide, min/max used instead
    out = slice_to_uint8(partial)
    assert out[5, 5] == 0 and out[10, 10] == 255


def test_slice_must_be_2d():
    with pytest.raises(ValueError, match="2D"):
        slice_to_uint8(np.zeros((2, 3, 4)))


def test_clip_box():
    np.testing.assert_array_equal(clip_box([-5, 3, 40, 90], (50, 30)), [0, 3, 29, 49])
    assert clip_box([40, 3, 60, 20], (50, 30)) is None  # entirely right of the slice
    assert clip_box([5, 5, 5, 20], (50, 30)) is None  # zero width
    assert clip_box([5, 20, 9, 10], (50, 30)) is None  # inverted
    assert clip_box([0, np.nan, 3, 4], (50, 30)) is None


def test_clip_points():
    np.testing.assert_array_equal(clip_points([[-1, 5], [100, 100], [np.nan, 1]], (50, 30)), [[0, 5], [29, 49]])
    assert clip_points(None, (5, 5)).shape == (0, 2)


def test_pixel_hash_sees_pixels_and_shape():
    a = np.zeros((4, 6), np.uint8)
    assert pixel_hash(a) == pixel_hash(a.copy())
    assert pixel_hash(a) != pixel_hash(a.reshape(6, 4))
    b = a.copy()
    b[1, 1] = 1
    assert pixel_hash(a) != pixel_hash(b)


def test_resize_area_is_opencv_inter_area():
    """OpenCV INTER_AREA: block means (rounded half up) when shrinking by an integer factor,
    replication when enlarging by one, overlap-weighted means otherwise (cv2.resize([[0, 3, 6]],
    (2, 1), interpolation=INTER_AREA) == [[1, 5]]; enlarging 2 -> 3 gives [p0, (p0 + p1) / 2, p1])."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(8, 12)).astype(np.uint8)
    blocks = image.reshape(4, 2, 6, 2).astype(float).mean(axis=(1, 3))
    np.testing.assert_array_equal(resize_area(image, (4, 6)), np.floor(blocks + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(resize_area(np.array([[1, 1], [0, 0]], np.uint8), (1, 1)), [[1]])  # 0.5 -> 1
    np.testing.assert_array_equal(resize_area(image, (16, 24)), np.repeat(np.repeat(image, 2, 0), 2, 1))
    np.testing.assert_array_equal(resize_area(np.array([[0, 3, 6]], np.uint8), (1, 2)), [[1, 5]])
    np.testing.assert_array_equal(resize_area(np.array([[10, 20]], np.uint8), (1, 3)), [[10, 15, 20]])
    np.testing.assert_allclose(area_weights(7, 3).sum(axis=1), 1.0)
    np.testing.assert_allclose(area_weights(3, 7).sum(axis=1), 1.0)


def test_resized_shape_longest_side():
    assert resized_shape_longest((112, 80)) == (256, 183)
    assert resized_shape_longest((512, 300)) == (256, 150)
    assert resized_shape_longest((256, 256)) == (256, 256)


@pytest.mark.parametrize("shape", [(112, 80), (512, 256), (300, 260), (40, 60)])
def test_batched_device_preprocessing_matches_the_numpy_path(shape):
    """The GPU path (one batch of tensor operations) run on the CPU: the encoder inputs of the NumPy path,
    but for a gray level (1 / (max - min) after min-max) on at most 0.5 % of the pixels where float32 sums round
    differently."""
    import torch

    from nnunet_fmabs.generalists.litemedsam import litemedsam_input, litemedsam_input_batch

    rng = np.random.default_rng(sum(shape))
    images = [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(3)]
    images[1][:] = 7  # a flat slice: min-max of a constant is 0, as in the NumPy path
    images[1][0, 0] = 200
    batch = litemedsam_input_batch(images, torch.device("cpu"))
    single = torch.stack([litemedsam_input(image) for image in images])
    assert batch.shape == single.shape == (3, 3, 256, 256) and batch.dtype == torch.float32
    difference = (batch - single).abs()
    # one gray level after min-max is 1 / (max - min) of the resized slice: 1/255 only when it spans 0..255
    # (area resizing narrows it: the (300, 260) slices span 245-246 levels, and an AVX2 CPU rounded a pixel there)
    gray = torch.tensor([1 / max(1, int(np.ptp(resize_area(image, resized_shape_longest(image.shape)))))
                         for image in images]).view(3, 1, 1, 1)
    assert (difference <= gray + 1e-6).all()
    assert (difference > 1e-6).float().mean() <= 0.005
