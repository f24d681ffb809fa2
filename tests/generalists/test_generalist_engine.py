"""The batched engine's handling of awkward input (a tiny SAM with random weights: fast)."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def sam(random_checkpoints):
    cls, path = random_checkpoints["sam"]
    return cls(checkpoint=path, dtype="fp32", batch_size=4)


def _image(shape, seed=0):
    image = np.random.default_rng(seed).normal(size=shape)
    image[shape[0] // 4: shape[0] // 2, shape[1] // 4: shape[1] // 2] += 3
    return image


def _encoded(generalist, call):
    before = generalist.stats["encoded_slices"]
    result = call()
    return result, generalist.stats["encoded_slices"] - before


def test_slices_without_contrast_get_empty_masks_and_are_not_encoded(sam):
    slices = [np.full((30, 40), 7.0), np.full((50, 20), np.nan), _image((40, 40))]
    boxes = np.array([[2, 2, 20, 20]] * 3, float)
    (masks, scores), encoded = _encoded(sam, lambda: sam.predict(slices, boxes))
    assert encoded == 1
    assert [m.shape for m in masks] == [(30, 40), (50, 20), (40, 40)]
    assert not masks[0].any() and not masks[1].any()
    assert scores[0] == scores[1] == 0 and scores[2] != 0


def test_box_outside_the_slice_is_clipped_and_zero_area_is_skipped(sam):
    image = _image((40, 60))
    (clipped, _), _ = _encoded(sam, lambda: sam.predict([image], np.array([[0.0, 0, 59, 39]])))
    (outside, _), _ = _encoded(sam, lambda: sam.predict([image], np.array([[-30.0, -10, 90, 55]])))
    np.testing.assert_array_equal(clipped[0], outside[0])
    boxes = np.array([[70, 5, 90, 20], [10, 10, 10, 30], [5, 5, 30, 30]], float)  # right of it, zero width
    (masks, scores), encoded = _encoded(sam, lambda: sam.predict([image] * 3, boxes))
    assert not masks[0].any() and not masks[1].any() and scores[0] == scores[1] == 0
    assert encoded == 1


def test_each_slice_is_encoded_once_per_call(sam):
    image = _image((40, 40))
    boxes = np.array([[5, 5, 30, 30], [8, 8, 25, 25]], float)
    (masks, _), encoded = _encoded(sam, lambda: sam.predict([image, image.copy()], boxes))
    assert encoded == 1
    (alone, _), _ = _encoded(sam, lambda: sam.predict([image], boxes[1:]))
    np.testing.assert_array_equal(masks[1], alone[0])


def test_slices_with_different_point_counts_decode_as_alone(sam):
    slices = [_image((40, 40), 1), _image((48, 32), 2), _image((32, 48), 3)]
    boxes = np.array([[5, 5, 30, 30], [4, 6, 20, 40], [6, 4, 40, 20]], float)
    points = [np.array([[15.0, 15]]), None, np.array([[10.0, 20], [12, 22]])]
    negatives = [None, np.array([[1.0, 1]]), None]
    together, scores = sam.predict(slices, boxes, points, negatives)
    for i in range(3):
        alone, score = sam.predict(slices[i:i + 1], boxes[i:i + 1], points[i:i + 1], negatives[i:i + 1])
        np.testing.assert_array_equal(together[i], alone[0])
        np.testing.assert_allclose(scores[i], score[0], atol=1e-5)
    _, without_points = sam.predict(slices[2:], boxes[2:])
    assert not np.isclose(without_points[0], scores[2], atol=1e-4)  # the points reach the model


def test_bad_arguments_are_refused(sam):
    image = _image((20, 20))
    with pytest.raises(ValueError, match="boxes must have shape"):
        sam.predict([image, image], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="2D"):
        sam.predict([np.zeros((2, 20, 20))], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="points: 2 entries for 1 slices"):
        sam.predict([image], np.zeros((1, 4)), points=[None, None])
    with pytest.raises(ValueError, match="unknown dtype"):
        type(sam)(checkpoint=sam.checkpoint, dtype="int8")


def test_segment_is_the_public_contract(sam):
    slices = [_image((40, 40)), _image((30, 50))]
    boxes = np.array([[5, 5, 30, 30], [4, 4, 40, 25]], float)
    masks = sam.segment(slices, boxes, [np.array([[15.0, 15]]), np.array([[20.0, 10]])])
    assert isinstance(masks, list) and [m.shape for m in masks] == [(40, 40), (30, 50)]
    assert all(m.dtype == np.bool_ for m in masks)
