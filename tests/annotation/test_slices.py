import numpy as np
import pytest
from scipy import ndimage

from nnunet_fmabs.annotation.slices import cross_label, select_slices


def _label():
    label = np.zeros((10, 12, 14), dtype=np.uint8)
    label[2:5, 3:9, 4:6] = 1  # axis 0: 2..4, axis 1: 3..8, axis 2: 4..5 (36 voxels)
    label[8, 3, 4] = 1  # one outlier voxel
    return label


def test_bbox_middle():
    # axis 0: (2 + 8) // 2 = 5; axis 1: (3 + 8) // 2 = 5; axis 2: (4 + 5) // 2 = 4
    assert select_slices(_label()) == (5, 5, 4)
    assert select_slices(_label(), "bbox_middle") == (5, 5, 4)


def test_max_area():
    # axis 0: slices 2, 3, 4 hold 12 voxels each (tie -> 2), slice 8 one
    # axis 1: slice 3 holds 3*2 + 1 = 7, slices 4..8 hold 6 -> 3
    # axis 2: slice 4 holds 18 + 1 = 19, slice 5 holds 18 -> 4
    assert select_slices(_label(), "max_area") == (2, 3, 4)


def test_centroid():
    # 37 voxels. axis 0: (12*(2+3+4) + 8) / 37 = 116/37 = 3.14 -> 3
    # axis 1: (6*(3+4+5+6+7+8) + 3) / 37 = 201/37 = 5.43 -> 5
    # axis 2: (18*4 + 18*5 + 4) / 37 = 166/37 = 4.49 -> 4
    assert select_slices(_label(), "centroid") == (3, 5, 4)
    com = ndimage.center_of_mass(_label() > 0)
    assert select_slices(_label(), "centroid") == tuple(int(np.floor(c + 0.5)) for c in com)
    half = np.zeros((4, 4, 4), np.uint8)
    half[1:3, 1, 1] = 1  # centre 1.5 on axis 0 -> rounded half up to 2
    assert select_slices(half, "centroid") == (2, 1, 1)


def test_empty_label_gives_middle_slices():
    for rule in ("bbox_middle", "max_area", "centroid"):
        assert select_slices(np.zeros((10, 12, 15), np.uint8), rule) == (5, 6, 7)


def test_select_slices_errors():
    with pytest.raises(ValueError, match="bbox_middle, max_area, centroid"):
        select_slices(_label(), "random")
    with pytest.raises(ValueError, match="3D"):
        select_slices(np.zeros((4, 4), np.uint8))


def test_cross_label_three_planes():
    label = _label()
    slices = (3, 5, 4)
    out = cross_label(label, slices, ignore_value=255)
    assert out.dtype == np.uint8 and out.shape == label.shape
    labeled = out != 255
    # exactly the three planes
    expected = np.zeros(label.shape, bool)
    expected[3], expected[:, 5], expected[:, :, 4] = True, True, True
    assert np.array_equal(labeled, expected)
    a, b, c = label.shape
    assert labeled.sum() == b * c + a * c + a * b - a - b - c + 1
    assert np.array_equal(out[labeled], label[labeled])
    assert np.array_equal(out[3], label[3]) and np.array_equal(out[:, :, 4], label[:, :, 4])


def test_cross_label_widens_dtype_for_ignore_value():
    out = cross_label(_label(), (0, 0, 0), ignore_value=-1)
    assert out.dtype == np.int16 and out.min() == -1
    assert cross_label(_label(), (0, 0, 0), ignore_value=2).dtype == np.uint8


def test_cross_label_errors():
    with pytest.raises(ValueError, match="out of range"):
        cross_label(_label(), (10, 0, 0), 255)
    with pytest.raises(ValueError, match="out of range"):
        cross_label(_label(), (0, -1, 0), 255)
    with pytest.raises(ValueError):
        cross_label(_label(), (0, 0), 255)
    with pytest.raises(ValueError, match="ignore_value"):
        cross_label(_label(), (0, 0, 0), 1)
