"""LA (UA-MT layout, h5) -> nnU-Net raw, on tiny h5 files written here (never the real data)."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_fmabs.data import LAConversionError, convert_la
from nnunet_fmabs.data.la import IMAGE_FOLDER, LA_SPACING_MM, read_case_list

from ._nnunet_checks import assert_valid_nnunet_raw

SHAPE = (20, 16, 12)  # (x, y, z), all different so that a transposition shows


def _case_arrays(seed: int, shape=SHAPE):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[4:12, 3:9, 2:8] = 1
    image[1, 2, 3] = 100.0  # asymmetric marker at h5 index (x=1, y=2, z=3)
    return image, label


def _write_case(base: Path, case: str, image=None, label=None, *, seed=0, skip=()):
    if image is None:
        image, label = _case_arrays(seed)
    folder = base / IMAGE_FOLDER / case
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "mri_norm2.h5", "w") as f:
        if "image" not in skip:
            f.create_dataset("image", data=image, compression="gzip")
        if "label" not in skip:
            f.create_dataset("label", data=label, compression="gzip")
    return image, label


def _make_root(tmp_path: Path, train=("CASEA1", "CASEB2", "CASEC3"), test=("TESTD4",), extra=("UNLISTED9",)):
    root = tmp_path / "LA data"  # a space in the root too
    arrays = {}
    for i, case in enumerate((*train, *test, *extra)):
        arrays[case] = _write_case(root, case, seed=i)
    (root / "train.list").write_text("\n".join(train) + "\n\n")
    if test:
        (root / "test.list").write_text("\n".join(test) + "\n")
    return root, arrays


def _read(path: Path):
    """(array indexed [x, y, z] via GetPixel order, sitk image)."""
    image = sitk.ReadImage(str(path))
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)), image


def test_converts_train_and_test_lists(tmp_path):
    root, arrays = _make_root(tmp_path)
    out = convert_la(root, tmp_path / "raw", progress=False)
    assert out == tmp_path / "raw" / "Dataset992_LA"
    dataset_json = assert_valid_nnunet_raw(out)
    assert dataset_json["channel_names"] == {"0": "MRI"}
    assert dataset_json["labels"] == {"background": 0, "left_atrium": 1}
    assert dataset_json["numTraining"] == 3 and dataset_json["numTest"] == 1
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "CASEA1_0000.nii.gz", "CASEB2_0000.nii.gz", "CASEC3_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "CASEA1.nii.gz", "CASEB2.nii.gz", "CASEC3.nii.gz"]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["TESTD4_0000.nii.gz"]
    assert [p.name for p in (out / "labelsTs").iterdir()] == ["TESTD4.nii.gz"]
    assert not list(out.rglob("UNLISTED9*"))  # only listed cases
    for case, folder in (("CASEB2", "Tr"), ("TESTD4", "Ts")):
        image, image_itk = _read(out / f"images{folder}" / f"{case}_0000.nii.gz")
        label, label_itk = _read(out / f"labels{folder}" / f"{case}.nii.gz")
        np.testing.assert_array_equal(image, arrays[case][0])
        np.testing.assert_array_equal(label, arrays[case][1])
        assert label.dtype == np.uint8 and image.dtype == np.float32


def test_geometry_and_axis_order(tmp_path):
    root, arrays = _make_root(tmp_path, train=("CASEA1",), test=(), extra=())
    out = convert_la(root, tmp_path / "raw", progress=False)
    image = sitk.ReadImage(str(out / "imagesTr" / "CASEA1_0000.nii.gz"))
    label = sitk.ReadImage(str(out / "labelsTr" / "CASEA1.nii.gz"))
    assert image.GetSize() == label.GetSize() == SHAPE  # NIfTI (x, y, z) = the h5's axes
    assert image.GetSpacing() == label.GetSpacing() == (LA_SPACING_MM,) * 3
    assert image.GetPixel(1, 2, 3) == 100.0  # the marker at NIfTI voxel (i, j, k) = h5 [1, 2, 3]
    assert image.GetPixel(3, 2, 1) != 100.0
    assert label.GetPixel(4, 3, 2) == 1 and label.GetPixel(3, 3, 2) == 0 and label.GetPixel(4, 3, 8) == 0
    # nnU-Net's reader gives (c, z, y, x) arrays: the marker is at [0, 3, 2, 1]
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    data, props = SimpleITKIO().read_images([str(out / "imagesTr" / "CASEA1_0000.nii.gz")])
    assert data.shape == (1, 12, 16, 20) and data[0, 3, 2, 1] == 100.0
    assert tuple(props["spacing"]) == (LA_SPACING_MM,) * 3


def test_test_root_and_case_subset(tmp_path):
    root, _ = _make_root(tmp_path, test=())
    test_root = tmp_path / "held out"
    test_image, test_label = _write_case(test_root, "TESTX1", seed=42)
    (test_root / "test.list").write_text("TESTX1\n")
    out = convert_la(root, tmp_path / "raw", test_root=test_root, cases=["CASEB2", "TESTX1"], progress=False)
    assert [p.name for p in (out / "imagesTr").iterdir()] == ["CASEB2_0000.nii.gz"]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["TESTX1_0000.nii.gz"]
    np.testing.assert_array_equal(_read(out / "labelsTs" / "TESTX1.nii.gz")[0], test_label)
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1


def test_list_files_tolerate_paths_blank_lines_and_duplicates(tmp_path):
    lst = tmp_path / "train.list"
    lst.write_text("A1\n\n  B2  \n# comment\n../data/2018LA_Seg_Training Set/C3/mri_norm2.h5\nA1\n")
    assert read_case_list(lst) == ["A1", "B2", "C3"]


def test_resampling(tmp_path):
    root, arrays = _make_root(tmp_path, train=("CASEA1",), test=("TESTD4",), extra=())
    out = convert_la(root, tmp_path / "raw", spacing=1.25, progress=False)
    image, image_itk = _read(out / "imagesTr" / "CASEA1_0000.nii.gz")
    label, label_itk = _read(out / "labelsTr" / "CASEA1.nii.gz")
    assert image.shape == label.shape == (10, 8, 6)  # 0.625 / 1.25 = 1/2
    assert image_itk.GetSpacing() == label_itk.GetSpacing() == (1.25, 1.25, 1.25)
    assert image_itk.GetOrigin() == label_itk.GetOrigin()
    assert set(np.unique(label)) == {0, 1} and label.dtype == np.uint8
    # new voxel j sits on old voxel 2j (same first voxel centre): the label is every second old voxel
    expected = arrays["CASEA1"][1][::2, ::2, ::2]
    np.testing.assert_array_equal(label, expected)
    assert json.loads((out / "dataset.json").read_text())["spacing_mm"] == [1.25] * 3
    assert_valid_nnunet_raw(out)
    # a non-integer factor: sizes n * 0.625 / 1.0, halves rounded up
    out = convert_la(root, tmp_path / "raw1", dataset_id=993, spacing=1.0, progress=False)
    label, _ = _read(out / "labelsTs" / "TESTD4.nii.gz")
    assert label.shape == (13, 10, 8) and set(np.unique(label)) == {0, 1}  # 12.5, 10, 7.5 rounded up
    # odd sizes: halves round up, consistently on every axis
    from nnunet_fmabs.data.la import resample_case

    image, label = _case_arrays(0, shape=(21, 17, 13))
    small_image, small_label = resample_case(image, label, LA_SPACING_MM, 1.25)
    assert small_image.shape == small_label.shape == (11, 9, 7)
    np.testing.assert_array_equal(small_label, label[::2, ::2, ::2])
    with pytest.raises(ValueError, match="positive"):
        convert_la(root, tmp_path / "raw2", spacing=0, progress=False)


@pytest.mark.parametrize("problem, match", [
    ("no_root", "LA root not found"),
    ("no_train_list", "train.list does not exist"),
    ("no_test_list_in_test_root", "test.list"),
    ("no_h5", "has no mri_norm2.h5"),
    ("no_case_folder", "no folder CASEB2"),
    ("no_label", "no dataset 'label'"),
    ("no_image", "no dataset 'image'"),
    ("shape_mismatch", "shapes differ"),
    ("bad_label_values", "only 0 and 1, found also \\[2\\]"),
    ("not_hdf5", "not a readable HDF5"),
    ("unknown_case", "not in train.list"),
    ("train_test_overlap", "both in train.list and test.list"),
])
def test_bad_input_is_a_clear_error(tmp_path, problem, match):
    root, _ = _make_root(tmp_path, extra=())
    h5_b = root / IMAGE_FOLDER / "CASEB2" / "mri_norm2.h5"
    kwargs = {}
    if problem == "no_root":
        root = tmp_path / "nowhere"
    elif problem == "no_train_list":
        (root / "train.list").unlink()
    elif problem == "no_test_list_in_test_root":
        (root / "test.list").unlink()
        (tmp_path / "held_out").mkdir()
        kwargs["test_root"] = tmp_path / "held_out"
    elif problem == "no_h5":
        h5_b.unlink()
    elif problem == "no_case_folder":
        h5_b.unlink()
        h5_b.parent.rmdir()
    elif problem == "no_label":
        _write_case(root, "CASEB2", *_case_arrays(0), skip=("label",))
    elif problem == "no_image":
        _write_case(root, "CASEB2", *_case_arrays(0), skip=("image",))
    elif problem == "shape_mismatch":
        image, label = _case_arrays(0)
        _write_case(root, "CASEB2", image, label[:, :, :-1])
    elif problem == "bad_label_values":
        image, label = _case_arrays(0)
        label[0, 0, 0] = 2
        _write_case(root, "CASEB2", image, label)
    elif problem == "not_hdf5":
        h5_b.write_bytes(b"not an h5 file")
    elif problem == "unknown_case":
        kwargs["cases"] = ["CASEA1", "NOPE"]
    elif problem == "train_test_overlap":
        (root / "test.list").write_text("CASEB2\n")
    with pytest.raises(LAConversionError, match=match) as info:
        convert_la(root, tmp_path / "raw", progress=False, **kwargs)
    assert isinstance(info.value, ValueError)
    if problem in ("no_h5", "no_label", "no_image", "shape_mismatch", "bad_label_values", "not_hdf5"):
        assert "CASEB2" in str(info.value)  # the message names the file
    if problem in ("no_train_list", "no_root"):
        assert str(root) in str(info.value)
    assert not (tmp_path / "raw" / "Dataset992_LA").exists()  # nothing half-written
