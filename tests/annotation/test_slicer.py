"""3D Slicer segmentations (.seg.nrrd) become label volumes on the raw image's grid.

Files are written with slicerio (the Slicer team's package) the way 3D Slicer stores them: named
segments, overlapping ones in further layers (a 4D array), cropped to the labeled extent.
"""
from __future__ import annotations

import numpy as np
import pytest
import slicerio

from nnunet_fmabs.annotation.human import AnnotationWarning
from nnunet_fmabs.annotation.slicer import SlicerSegmentationError, read_seg_nrrd, segment_labels

SIZE = (7, 6, 5)  # ITK (i, j, k)
SPACING = (0.5, 1.0, 2.0)
ORIGIN = (10.0, -20.0, 30.0)
PERMUTED = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)  # i -> y, j -> z, k -> x
NAMES = {"background": 0, "left atrium": 1, "vessel": 2}


def ijk_to_lps(direction, offset=(0, 0, 0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, float).reshape(3, 3) @ np.diag(SPACING)
    m[:3, 3] = np.asarray(ORIGIN) + m[:3, :3] @ np.asarray(offset, float)
    return m


def write(path, stored_shape, masks, direction=np.eye(3).ravel(), offset=(0, 0, 0), matrix=None):
    """A .seg.nrrd on a grid of ``stored_shape`` (i, j, k) whose voxel 0 is the image's voxel ``offset``."""
    seg = slicerio.create_segmentation(stored_shape, ijk_to_lps(direction, offset) if matrix is None else matrix)
    for name, mask in masks:
        slicerio.add_segment(seg, mask, {"name": name})
    slicerio.write_segmentation(str(path), seg)
    return path


def read(path, direction=np.eye(3).ravel(), names=NAMES, max_label=2):
    return read_seg_nrrd(path, SIZE, SPACING, ORIGIN, direction, names, max_label)


def box(shape, *ranges):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in ranges)] = True
    return m


def test_cropped_layers_land_on_the_image_grid(tmp_path):
    stored = (3, 4, 2)
    atrium = box(stored, (0, 2), (0, 2), (0, 1))
    vessel = box(stored, (2, 3), (1, 4), (1, 2))
    atrium_too = box(stored, (1, 2), (1, 3), (0, 1))  # overlaps "left atrium": a second layer, same label
    path = write(tmp_path / "c.seg.nrrd", stored, [("Left_Atrium", atrium), ("vessel", vessel),
                                                    ("left atrium", atrium_too)], offset=(2, 1, 3))
    assert slicerio.read_segmentation(str(path))["voxels"].ndim == 4  # Slicer's layers
    out = read(path)
    assert out.shape == (5, 6, 7) and out.dtype == np.uint8  # (z, y, x) = (k, j, i)
    expected = np.zeros(SIZE, np.uint8)  # (i, j, k), by hand: stored voxel (a, b, c) is image voxel (a+2, b+1, c+3)
    expected[2:4, 1:3, 3] = 1
    expected[3, 2:4, 3] = 1
    expected[4, 2:5, 4] = 2
    np.testing.assert_array_equal(out, expected.transpose(2, 1, 0))


def test_extent_beyond_the_image_is_cut(tmp_path):
    stored = (4, 2, 2)
    path = write(tmp_path / "c.seg.nrrd", stored, [("vessel", np.ones(stored, bool))], offset=(5, -1, 4))
    out = read(path).transpose(2, 1, 0)
    expected = np.zeros(SIZE, np.uint8)
    expected[5:7, 0:1, 4:5] = 2
    np.testing.assert_array_equal(out, expected)


def test_non_identity_direction(tmp_path):
    stored = (2, 3, 1)
    mask = np.zeros(stored, bool)
    mask[1, 2, 0] = True
    path = write(tmp_path / "c.seg.nrrd", stored, [("left atrium", mask)], direction=PERMUTED, offset=(4, 1, 2))
    out = read(path, direction=PERMUTED)
    (k,), (j,), (i,) = np.nonzero(out)
    assert (i, j, k) == (5, 3, 2)


def test_one_segment_of_a_binary_dataset_is_its_label(tmp_path):
    path = write(tmp_path / "c.seg.nrrd", SIZE, [("Segment_1", box(SIZE, (0, 1), (0, 1), (0, 1)))])
    out = read(path, names={"background": 0, "organ": 1}, max_label=1)
    assert out[0, 0, 0] == 1 and out.sum() == 1


def test_unknown_names_fall_back_to_label_values_with_a_warning(tmp_path):
    # a label map loaded in Slicer and converted: segments named from its colour table, values kept
    seg = slicerio.create_segmentation(SIZE, ijk_to_lps(np.eye(3).ravel()))
    seg["voxels"][0, 0, 0] = 2
    seg["voxels"][1, 0, 0] = 1
    seg["segments"] = [{"id": "a", "name": "tissue", "labelValue": 1, "layer": 0},
                       {"id": "b", "name": "bone", "labelValue": 2, "layer": 0}]
    slicerio.write_segmentation(str(tmp_path / "c.seg.nrrd"), seg)
    with pytest.warns(AnnotationWarning, match=r"'tissue' -> label 1 .*'bone' -> label 2"):
        out = read(tmp_path / "c.seg.nrrd").transpose(2, 1, 0)
    assert out[0, 0, 0] == 2 and out[1, 0, 0] == 1 and out.sum() == 3


def test_unknown_name_with_a_value_out_of_range_names_the_labels(tmp_path):
    segments = [{"id": "a", "name": "tumour", "labelValue": 3}]
    with pytest.raises(SlicerSegmentationError, match=r"c.seg.nrrd: segment 'tumour' \(label value 3\) matches no "
                                                      r"label .*'background' \(0\), 'left atrium' \(1\), 'vessel' \(2\)"):
        segment_labels(segments, NAMES, 2, "c.seg.nrrd")


def test_different_labels_on_one_voxel_are_refused(tmp_path):
    path = write(tmp_path / "c.seg.nrrd", SIZE, [("left atrium", box(SIZE, (0, 3), (0, 1), (0, 1))),
                                                 ("vessel", box(SIZE, (2, 4), (0, 1), (0, 1)))])
    with pytest.raises(SlicerSegmentationError, match="segment 'vessel' \\(label 2\\) overlaps .* on 1 voxels"):
        read(path)


def test_another_grid_is_refused(tmp_path):
    other = ijk_to_lps(np.eye(3).ravel())
    other[0, 0] = 0.25  # other spacing
    path = write(tmp_path / "spacing.seg.nrrd", SIZE, [("vessel", np.ones(SIZE, bool))], matrix=other)
    with pytest.raises(SlicerSegmentationError, match="spacing.seg.nrrd: its voxel grid .* is not the image's"):
        read(path)
    between = ijk_to_lps(np.eye(3).ravel(), offset=(0.5, 0, 0))
    path = write(tmp_path / "between.seg.nrrd", SIZE, [("vessel", np.ones(SIZE, bool))], matrix=between)
    with pytest.raises(SlicerSegmentationError, match=r"between.seg.nrrd: its origin lies between .*0\.5"):
        read(path)


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.seg.nrrd"
    path.write_bytes(b"NRRD0004\nnot a header\n")
    with pytest.raises(SlicerSegmentationError, match="broken.seg.nrrd: cannot be read as a 3D Slicer segmentation"):
        read(path)
