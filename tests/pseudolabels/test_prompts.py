import numpy as np
import pytest

from nnunet_fmabs.pseudolabels.prompts import (
    SlicePrompt,
    box_from_mask,
    grow_box,
    sample_points,
    slice_prompts,
    volume_prompts,
)


def _mask():
    mask = np.zeros((20, 30), dtype=bool)
    mask[8:11, 12:17] = True  # rows (y) 8..10, columns (x) 12..16
    mask[9, 18] = True  # a detached pixel at x = 18
    return mask


def test_box_from_mask_is_tight_xy_inclusive():
    assert box_from_mask(_mask()) == (12, 8, 18, 10)
    assert box_from_mask(np.zeros((4, 4), bool)) is None
    single = np.zeros((5, 7), bool)
    single[3, 6] = True
    assert box_from_mask(single) == (6, 3, 6, 3)
    with pytest.raises(ValueError):
        box_from_mask(np.zeros((2, 2, 2), bool))


def test_grow_box_each_side_in_0_to_10():
    box, shape = (40, 40, 60, 50), (100, 100)  # far from the border: no clipping
    rng = np.random.default_rng(0)
    growth = []
    for _ in range(400):
        x0, y0, x1, y1 = grow_box(box, shape, rng)
        growth.append((40 - x0, 40 - y0, x1 - 60, y1 - 50))
    growth = np.array(growth)
    assert growth.min() == 0 and growth.max() == 10
    # each side independent and covering the whole range 0..10
    for side in range(4):
        assert set(growth[:, side].tolist()) == set(range(11))
    assert not np.array_equal(growth[:, 0], growth[:, 2])


def test_grow_box_is_clipped_at_the_border():
    rng = np.random.default_rng(1)
    shape = (12, 9)  # rows, columns
    for _ in range(100):
        x0, y0, x1, y1 = grow_box((1, 0, 7, 11), shape, rng)
        assert 0 <= x0 <= 1 and y0 == 0 and 7 <= x1 <= 8 and y1 == 11
    assert grow_box((0, 0, 8, 11), shape, rng) == (0, 0, 8, 11)
    assert grow_box((3, 3, 4, 4), shape, rng, max_growth=0) == (3, 3, 4, 4)
    with pytest.raises(ValueError):
        grow_box((0, 0, 9, 4), shape, rng)  # x1 outside the 9 columns


def test_sample_points_inside_mask_without_replacement():
    mask = _mask()
    rng = np.random.default_rng(0)
    points = sample_points(mask, 5, rng)
    assert points.shape == (5, 2) and points.dtype == np.int64
    assert mask[points[:, 1], points[:, 0]].all()  # (x, y) = (column, row)
    assert len({tuple(p) for p in points}) == 5
    everything = sample_points(mask, 100, rng)  # 16 foreground pixels
    assert everything.shape == (16, 2) and len({tuple(p) for p in everything}) == 16
    assert sample_points(np.zeros((3, 3), bool), 5, rng).shape == (0, 2)
    assert sample_points(mask, 0, rng).shape == (0, 2)


def test_one_voxel_mask():
    mask = np.zeros((8, 8), bool)
    mask[0, 7] = True  # top-right corner
    prompt = slice_prompts(mask, np.random.default_rng(0))
    assert isinstance(prompt, SlicePrompt)
    x0, y0, x1, y1 = prompt.box
    assert x0 <= 7 == x1 and y0 == 0 <= y1 and 7 - x0 <= 10 and y1 <= 10
    assert prompt.points.tolist() == [[7, 0]]
    assert prompt.point_labels.tolist() == [1]


def test_slice_prompts_empty_slice_and_reproducibility():
    assert slice_prompts(np.zeros((6, 6), bool), np.random.default_rng(0)) is None
    a = slice_prompts(_mask(), np.random.default_rng(5))
    b = slice_prompts(_mask(), np.random.default_rng(5))
    assert a.box == b.box and np.array_equal(a.points, b.points)
    x0, y0, x1, y1 = a.box
    assert x0 <= 12 and y0 <= 8 and x1 >= 18 and y1 >= 10 and len(a.points) == 5


def test_volume_prompts_skip_empty_slices_and_follow_np_take():
    mask = np.zeros((6, 7, 8), bool)
    mask[2, 1:3, 4:6] = True
    mask[4, 5, 7] = True
    rng = np.random.default_rng(0)
    axial = volume_prompts(mask, 0, rng, max_growth=0)
    assert [i for i, _ in axial] == [2, 4]
    # slice = mask[i]: rows are axis 1, columns axis 2
    assert axial[0][1].box == (4, 1, 5, 2) and axial[1][1].box == (7, 5, 7, 5)
    assert [i for i, _ in volume_prompts(mask, 1, rng)] == [1, 2, 5]
    last = volume_prompts(mask, 2, rng, max_growth=0)
    assert [i for i, _ in last] == [4, 5, 7]
    # slice = mask[:, :, 7]: rows are axis 0, columns axis 1 -> voxel (4, 5) at x = 5, y = 4
    assert last[2][1].box == (5, 4, 5, 4) and last[2][1].points.tolist() == [[5, 4]]
    for index, prompt in axial + last:
        assert len(prompt.points) >= 1
    assert volume_prompts(np.zeros((3, 3, 3), bool), 0, rng) == []
    with pytest.raises(ValueError):
        volume_prompts(mask, 3, rng)
