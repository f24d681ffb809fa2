"""The synthetic phantom: a valid nnU-Net raw dataset, deterministic, and not solvable by a threshold or a box."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_fmabs.data import make_phantom
from nnunet_fmabs.data.phantom import MIN_SIDE, SPACING_MM, baseline_dice, phantom_case

from ._nnunet_checks import assert_valid_nnunet_raw

SHAPE = (64, 64, 48)  # the default


def _read(path):
    """(array indexed [x, y, z], image)."""
    image = sitk.ReadImage(str(path))
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)), image


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    return make_phantom(out, n_train=3, n_test=1, seed=0, progress=False)


def test_layout_and_dataset_json(phantom):
    assert phantom.name == "Dataset991_FMABSPhantom"
    dataset_json = assert_valid_nnunet_raw(phantom)
    assert dataset_json["channel_names"] == {"0": "MRI"}
    assert dataset_json["labels"] == {"background": 0, "organ": 1}
    assert dataset_json["numTraining"] == 3
    assert dataset_json["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (phantom / "imagesTr").iterdir()) == [
        f"phantom_{i:03d}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (phantom / "labelsTr").iterdir()) == [f"phantom_{i:03d}.nii.gz" for i in range(3)]
    assert [p.name for p in (phantom / "imagesTs").iterdir()] == ["phantom_test_000_0000.nii.gz"]
    assert [p.name for p in (phantom / "labelsTs").iterdir()] == ["phantom_test_000.nii.gz"]
    # no temporary folder left behind
    assert [p.name for p in phantom.parent.iterdir()] == [phantom.name]


def test_nnunet_finds_the_dataset_by_id(phantom, monkeypatch):
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    monkeypatch.setenv("nnUNet_raw", str(phantom.parent))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    assert convert_id_to_dataset_name(991) == "Dataset991_FMABSPhantom"


def test_geometry_and_values(phantom):
    for folder, label_folder in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        for image_path in sorted((phantom / folder).iterdir()):
            image, image_itk = _read(image_path)
            label, label_itk = _read(phantom / label_folder / image_path.name.replace("_0000", ""))
            assert image.shape == label.shape == SHAPE
            assert image_itk.GetSize() == SHAPE
            assert image_itk.GetSpacing() == label_itk.GetSpacing() == (SPACING_MM,) * 3
            assert image.dtype == np.float32 and label.dtype == np.uint8
            assert set(np.unique(label)) == {0, 1}
            assert np.isfinite(image).all() and image.min() >= 0  # Rician magnitudes
            # organ of a reasonable size, off the border
            assert 0.05 <= label.mean() <= 0.15
            coords = np.nonzero(label)
            for axis, n in enumerate(SHAPE):
                assert coords[axis].min() >= 3 and coords[axis].max() <= n - 4


def test_deterministic_per_seed(tmp_path, phantom):
    a_img, a_lbl = phantom_case(SHAPE, seed=0, index=1)
    b_img, b_lbl = phantom_case(SHAPE, seed=0, index=1)
    assert a_img.tobytes() == b_img.tobytes() and a_lbl.tobytes() == b_lbl.tobytes()
    c_img, _ = phantom_case(SHAPE, seed=1, index=1)
    assert not np.array_equal(a_img, c_img)
    # the files hold exactly these arrays, and case i does not depend on n_train / n_test
    on_disk, _ = _read(phantom / "imagesTr" / "phantom_001_0000.nii.gz")
    assert on_disk.tobytes() == a_img.tobytes()
    other = make_phantom(tmp_path, n_train=2, n_test=0, seed=0, progress=False)
    for name in ("imagesTr/phantom_001_0000.nii.gz", "labelsTr/phantom_001.nii.gz"):
        assert _read(other / name)[0].tobytes() == _read(phantom / name)[0].tobytes()
    assert not any((other / "imagesTs").iterdir())


def test_neither_threshold_nor_box_is_enough(phantom):
    cases = [phantom_case(SHAPE, seed=3, index=i) for i in range(4)]
    cases.append((_read(phantom / "imagesTr" / "phantom_000_0000.nii.gz")[0],
                  _read(phantom / "labelsTr" / "phantom_000.nii.gz")[0]))
    for image, label in cases:
        scores = baseline_dice(image, label)
        assert scores["threshold"] < 0.8, scores
        assert scores["box"] < 0.8, scores


def test_baseline_dice_is_right_on_a_toy():
    label = np.zeros((4, 4, 4), np.uint8)
    label[1:3, 1:3, 1:2] = 1  # 4 voxels, box = the same 4 voxels
    image = label * 2.0
    image[0, 0, 0] = 3.0  # one brighter voxel outside: best threshold is image > 1 (t between 0 and 2)
    scores = baseline_dice(image, label)
    assert scores["box"] == pytest.approx(1.0)
    assert scores["threshold"] == pytest.approx(2 * 4 / (5 + 4))


def test_organ_has_a_local_contrast_edge():
    """A promptable 2D model needs an edge: the organ is clearly brighter than the tissue just outside it."""
    for i in range(3):
        image, label = phantom_case(SHAPE, seed=5, index=i)
        organ = label.astype(bool)
        inside = ndimage.binary_erosion(organ, iterations=2)
        ring = ndimage.binary_dilation(organ, iterations=4) & ~ndimage.binary_dilation(organ, iterations=2)
        assert np.median(image[inside]) > 1.6 * np.median(image[ring])


def test_argument_validation(tmp_path):
    with pytest.raises(ValueError, match=f">= {MIN_SIDE}"):
        make_phantom(tmp_path, shape=(64, 64, 16), progress=False)
    with pytest.raises(ValueError, match="three integers"):
        make_phantom(tmp_path, shape=(64, 64), progress=False)
    with pytest.raises(ValueError, match="n_train"):
        make_phantom(tmp_path, n_train=0, progress=False)
    with pytest.raises(ValueError, match="n_test"):
        make_phantom(tmp_path, n_test=-1, progress=False)
    with pytest.raises(ValueError, match="dataset_id"):
        make_phantom(tmp_path, dataset_id=1000, progress=False)
    with pytest.raises(ValueError, match="name"):
        make_phantom(tmp_path, name="has space", progress=False)
    assert not any(tmp_path.iterdir())  # nothing written


def test_smallest_shape_works(tmp_path):
    folder = make_phantom(tmp_path, n_train=1, n_test=0, shape=(MIN_SIDE,) * 3, progress=False)
    label, _ = _read(folder / "labelsTr" / "phantom_000.nii.gz")
    assert label.shape == (MIN_SIDE,) * 3 and label.sum() > 0


def test_rerun_replaces_only_its_own_dataset(tmp_path, capsys):
    first = make_phantom(tmp_path, n_train=3, n_test=1, shape=(24, 24, 24), progress=True)
    assert "phantom" in capsys.readouterr().err  # tqdm bar on stderr
    again = make_phantom(tmp_path, n_train=1, n_test=0, shape=(24, 24, 24), progress=False)
    assert again == first
    assert len(list((again / "imagesTr").iterdir())) == 1  # no stale case from the first run
    assert json.loads((again / "dataset.json").read_text())["numTraining"] == 1

    foreign = tmp_path / "Dataset993_Mine"
    (foreign / "imagesTr").mkdir(parents=True)
    (foreign / "dataset.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not written by"):
        make_phantom(tmp_path, dataset_id=993, name="Mine", n_train=1, shape=(24, 24, 24), progress=False)
    with pytest.raises(FileExistsError, match="same dataset id"):
        make_phantom(tmp_path, dataset_id=993, name="Other", n_train=1, shape=(24, 24, 24), progress=False)
    assert (foreign / "dataset.json").read_text() == "{}"
