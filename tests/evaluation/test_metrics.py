"""Dice, Jaccard, 95HD, ASD on hand-made volumes whose answers are known."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from medpy.metric import binary

from nnunet_fmabs.evaluation import EvaluationError, case_metrics, evaluate_folders, format_table


def _cube(shape=(20, 20, 20), start=5, side=10, shift=(0, 0, 0)):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(start + s, start + s + side) for s in shift)] = True
    return mask


# A 10^3 cube and the same cube moved one voxel along axis 0. Surfaces (medpy: the mask minus its
# 6-connected erosion) have 10^3 - 8^3 = 488 voxels each. Of the moved cube's surface, the face
# that left the reference (100 voxels) and the inner 8x8 of the face that entered it (64) are one
# voxel from the reference surface, the rest lies on it: 164 of 488 at distance 1 (same both ways).
SHIFTED_ASD = 164 / 488
# With spacing (2, 1, 1) those 100 voxels are 2 mm away; of the inner 64, the outer ring of 28 is
# 1 mm from the reference's side faces and the inner 6x6 = 36 are 2 mm away: (136 * 2 + 28) / 488.
SHIFTED_ASD_MM = (136 * 2 + 28 * 1) / 488


def test_identical_masks():
    gt = _cube()
    m = case_metrics(gt.copy(), gt, spacing=(1.5, 1.0, 0.5))
    assert m == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0, "hd95_mm": 0.0, "asd_mm": 0.0}


def test_cube_shifted_by_one_voxel():
    gt, pred = _cube(), _cube(shift=(1, 0, 0))
    m = case_metrics(pred, gt, spacing=(1.0, 1.0, 1.0))
    assert m["dice"] == pytest.approx(2 * 900 / 2000)  # overlap 9x10x10
    assert m["jaccard"] == pytest.approx(900 / 1100)
    assert m["hd95"] == pytest.approx(1.0)
    assert m["asd"] == pytest.approx(SHIFTED_ASD)
    assert m["hd95_mm"] == pytest.approx(1.0) and m["asd_mm"] == pytest.approx(SHIFTED_ASD)


def test_anisotropic_spacing_for_mm():
    gt, pred = _cube(), _cube(shift=(1, 0, 0))
    m = case_metrics(pred, gt, spacing=(2.0, 1.0, 1.0))
    assert m["hd95"] == pytest.approx(1.0)  # voxels: spacing ignored
    assert m["asd"] == pytest.approx(SHIFTED_ASD)
    assert m["hd95_mm"] == pytest.approx(2.0)
    assert m["asd_mm"] == pytest.approx(SHIFTED_ASD_MM)
    # the same shift along an axis of spacing 1 is 1 mm
    m = case_metrics(_cube(shift=(0, 1, 0)), gt, spacing=(2.0, 1.0, 1.0))
    assert m["hd95_mm"] == pytest.approx(1.0)


def test_empty_masks_convention():
    gt = _cube()
    diagonal = math.sqrt(3 * 19 ** 2)  # 20^3 image: corner voxel centre to corner voxel centre
    diagonal_mm = math.sqrt((19 * 2.0) ** 2 + 19 ** 2 + (19 * 0.5) ** 2)
    empty = np.zeros_like(gt)
    for pred, ref in ((empty, gt), (gt, empty)):
        m = case_metrics(pred, ref, spacing=(2.0, 1.0, 0.5))
        assert m["dice"] == 0.0 and m["jaccard"] == 0.0
        assert m["hd95"] == pytest.approx(diagonal) and m["asd"] == pytest.approx(diagonal)
        assert m["hd95_mm"] == pytest.approx(diagonal_mm) and m["asd_mm"] == pytest.approx(diagonal_mm)
    m = case_metrics(empty, empty, spacing=(2.0, 1.0, 0.5))
    assert m == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0, "hd95_mm": 0.0, "asd_mm": 0.0}


def test_without_spacing_mm_is_nan():
    m = case_metrics(_cube(shift=(1, 0, 0)), _cube())
    assert m["hd95"] == pytest.approx(1.0)
    assert math.isnan(m["hd95_mm"]) and math.isnan(m["asd_mm"])


def test_cropping_gives_medpys_numbers_exactly():
    """case_metrics crops to the masks' joint box; the numbers must equal medpy's on the full volume."""
    rng = np.random.default_rng(0)
    for i in range(4):
        shape = (30, 26, 22)
        gt = np.zeros(shape, bool)
        pred = np.zeros(shape, bool)
        gt[rng.integers(0, 8):rng.integers(15, 30), 3:20, 0:rng.integers(10, 22)] = True  # touches a border
        noise = rng.random(shape) < 0.03
        pred = (np.roll(gt, int(rng.integers(-2, 3)), axis=1) ^ noise)
        spacing = (1.0, 0.7, 2.5)
        m = case_metrics(pred, gt, spacing=spacing)
        assert m["dice"] == pytest.approx(binary.dc(pred, gt))
        assert m["jaccard"] == pytest.approx(binary.jc(pred, gt))
        assert m["hd95"] == pytest.approx(binary.hd95(pred, gt))
        assert m["asd"] == pytest.approx(binary.asd(pred, gt))
        assert m["hd95_mm"] == pytest.approx(binary.hd95(pred, gt, voxelspacing=spacing))
        assert m["asd_mm"] == pytest.approx(binary.asd(pred, gt, voxelspacing=spacing))


def test_input_validation():
    with pytest.raises(ValueError, match="shapes differ"):
        case_metrics(np.ones((3, 3, 3)), np.ones((3, 3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=(1.0, 1.0))


# -- folders ------------------------------------------------------------------------------------
SPACING_XYZ = (2.0, 1.0, 1.0)


def _write(path, mask_xyz, spacing=SPACING_XYZ):
    """Write a [x, y, z] label array as NIfTI (SimpleITK wants (z, y, x))."""
    image = sitk.GetImageFromArray(np.transpose(mask_xyz.astype(np.uint8), (2, 1, 0)).copy())
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


@pytest.fixture()
def folders(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    gt = _cube()
    _write(gt_dir / "caseA.nii.gz", gt)
    _write(pred_dir / "caseA.nii.gz", gt)
    _write(gt_dir / "caseB.nii.gz", gt)
    _write(pred_dir / "caseB.nii.gz", _cube(shift=(1, 0, 0)))  # moved along x, spacing 2 mm
    return pred_dir, gt_dir


def test_evaluate_folders(folders, tmp_path):
    pred_dir, gt_dir = folders
    out_json = tmp_path / "sub" / "summary.json"
    results = evaluate_folders(pred_dir, gt_dir, output_json=out_json)
    assert results["n_cases"] == 2 and results["labels"] == [1]
    b = results["cases"]["caseB"]["1"]
    assert b["dice"] == pytest.approx(0.9) and b["hd95"] == pytest.approx(1.0)
    assert b["hd95_mm"] == pytest.approx(2.0)  # x spacing 2.0 reaches the right array axis
    assert b["asd_mm"] == pytest.approx(SHIFTED_ASD_MM)
    assert results["cases"]["caseA"]["1"]["dice"] == 1.0
    assert results["mean"]["1"]["dice"] == pytest.approx(0.95)
    assert results["std"]["1"]["dice"] == pytest.approx(0.05)
    assert results["mean"]["1"]["hd95_mm"] == pytest.approx(1.0)
    assert results["foreground_mean"]["dice"] == pytest.approx(0.95)
    on_disk = json.loads(out_json.read_text())
    assert on_disk["cases"]["caseB"]["1"]["dice"] == pytest.approx(0.9)
    assert [p.name for p in out_json.parent.iterdir()] == ["summary.json"]  # no temporary left

    table = format_table(results)
    assert "caseA" in table and "caseB" in table
    assert "mean (std)" in table and "95.00 (5.00)" in table and "90.00" in table
    assert format_table(on_disk) == table  # also from the JSON


def test_missing_prediction_names_the_file(folders):
    pred_dir, gt_dir = folders
    (pred_dir / "caseB.nii.gz").unlink()
    with pytest.raises(EvaluationError, match="caseB.nii.gz"):
        evaluate_folders(pred_dir, gt_dir)


def test_shape_mismatch_names_the_file(folders):
    pred_dir, gt_dir = folders
    _write(pred_dir / "caseB.nii.gz", np.zeros((20, 20, 19), bool))
    with pytest.raises(EvaluationError, match=r"caseB\.nii\.gz: size \(20, 20, 19\)"):
        evaluate_folders(pred_dir, gt_dir)


def test_spacing_mismatch_names_the_file(folders):
    pred_dir, gt_dir = folders
    _write(pred_dir / "caseA.nii.gz", _cube(), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(EvaluationError, match=r"caseA\.nii\.gz: spacing"):
        evaluate_folders(pred_dir, gt_dir)


def test_multi_label_and_extra_predictions(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    gt = _cube().astype(np.uint8)
    gt[0:3, 0:3, 0:3] = 2
    pred = gt.copy()
    pred[0:3, 0:3, 0:3] = 0  # label 2 missed entirely
    _write(gt_dir / "c1.nii.gz", gt)
    _write(pred_dir / "c1.nii.gz", pred)
    _write(pred_dir / "stray.nii.gz", pred)
    with pytest.warns(UserWarning, match="stray.nii.gz"):
        results = evaluate_folders(pred_dir, gt_dir, labels=(1, 2))
    assert results["cases"]["c1"]["1"]["dice"] == 1.0
    assert results["cases"]["c1"]["2"]["dice"] == 0.0
    assert results["cases"]["c1"]["2"]["hd95"] == pytest.approx(math.sqrt(3 * 19 ** 2))
    assert results["foreground_mean"]["dice"] == pytest.approx(0.5)
    assert "label 2" in format_table(results)
    with pytest.raises(EvaluationError, match="no ground truth"):
        evaluate_folders(pred_dir, tmp_path, labels=(1,))
