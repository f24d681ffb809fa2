"""``nnunet-fmabs status RUN_DIR``: budget, labeled scans, rounds, pending queries; a clear error without state."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_fmabs.annotation.experts import ScanAccess
from nnunet_fmabs.annotation.human import HumanExpert
from nnunet_fmabs.annotation.pool import CrossAnnotation, LabeledPool
from nnunet_fmabs.annotation.status import RunStateError, format_status

CASES = ["la_001", "la_002", "la_003", "la_004", "la_005"]
RAW_SHAPE = (10, 12, 14)  # numpy (z, y, x)
RESUME = "nnUNetv2_train 42 3d_fullres 0 -tr FMABSTrainer_HER_MV -p nnUNetPlans --c"


def synthetic_access(tmp_path) -> ScanAccess:
    """Raw images and nnU-Net-like properties without nnU-Net: no transpose, a crop, no resampling."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for case in CASES:
        image = sitk.GetImageFromArray(np.ones(RAW_SHAPE, np.float32))
        image.SetSpacing((0.625, 0.625, 0.625))
        sitk.WriteImage(image, str(raw_dir / f"{case}_0000.nii.gz"))
    bbox = [[1, 9], [2, 12], [0, 14]]
    props = {"shape_before_cropping": RAW_SHAPE, "bbox_used_for_cropping": bbox,
             "shape_after_cropping_and_before_resampling": (8, 10, 14), "spacing": [0.625] * 3,
             "sitk_stuff": {"spacing": (0.625,) * 3, "origin": (0.0,) * 3, "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}}
    return ScanAccess(shape=lambda c: (8, 10, 14), properties=lambda c: props,
                      raw_image=lambda c: raw_dir / f"{c}_0000.nii.gz", max_label=1)


@pytest.fixture
def run_dir(tmp_path):
    """A fold folder after a simulated round 0 and a human round 1 waiting for the person."""
    run = tmp_path / "Dataset042_LA" / "FMABSTrainer_HER_MV__nnUNetPlans__3d_fullres" / "fold_0"
    pool = LabeledPool.open(run / "fmabs" / "pool", 4, CASES)
    pool.add_query(CASES[:2], {c: (3, 4, 5) for c in CASES[:2]}, expert="simulated", sampler="random", iteration=0)
    pool.answer({c: CrossAnnotation.from_dense(np.zeros((8, 10, 14), np.uint8), (3, 4, 5)) for c in CASES[:2]},
                {c: (8, 10, 14) for c in CASES[:2]})
    access = synthetic_access(tmp_path)
    expert = HumanExpert(run / "fmabs" / "queries", RESUME)
    entry = pool.add_query(CASES[2:4], {c: expert.propose_slices(c, access) for c in CASES[2:4]}, expert="human",
                           sampler="HER", iteration=1500)
    assert expert.answer(entry, access) is None
    return run


def test_status_of_a_run_waiting_for_the_expert(run_dir):
    text = format_status(run_dir)
    assert f"run: {run_dir}" in text
    assert "budget: 4 scans (12 slices) of 5 training scans" in text
    assert "labeled: 2 scans (6 slices), 2 waiting for the expert, 0 left in the budget" in text
    assert "la_001 (round 0, slices [3, 4, 5])" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("  ")]
    assert ["round", "status", "expert", "sampler", "iteration", "scans"] in rows
    assert ["0", "answered", "simulated", "random", "0", "la_001,", "la_002"] in rows
    assert ["1", "pending", "human", "HER", "1500", "la_003,", "la_004"] in rows
    assert "pending queries, round 1 (human):" in text
    folder = run_dir / "fmabs" / "queries" / "round_01"
    for case in ("la_003", "la_004"):
        assert f"edit {(folder / f'{case}.nii.gz').absolute()}" in text
    # identity direction: i = sagittal, j = coronal, k = axial; centre slices of the crop, in raw indices
    assert "(sagittal i=7, coronal j=7, axial k=5)" in text
    assert "allowed labels 0..1" in text and f"then resume with: {RESUME}" in text
    assert str(folder / "queries.json") in text


def test_status_when_the_files_are_not_written_yet(run_dir):
    (run_dir / "fmabs" / "queries" / "round_01" / "queries.json").unlink()
    assert "no files written yet" in format_status(run_dir)


def test_status_of_a_fresh_run(tmp_path):
    LabeledPool.open(tmp_path / "fmabs" / "pool", 2, CASES)
    text = format_status(tmp_path)
    assert "labeled: 0 scans (0 slices), 2 left in the budget" in text and "rounds: none yet" in text
    assert "pending" not in text


def test_a_folder_without_fmabs_state_is_named(tmp_path):
    with pytest.raises(RunStateError, match=rf"{tmp_path} has no FM-ABS state \(fmabs/pool/pool.json is missing\)"):
        format_status(tmp_path)
    with pytest.raises(RunStateError, match="does not exist"):
        format_status(tmp_path / "nope")


def test_a_corrupt_pool_file_is_named(tmp_path):
    (tmp_path / "fmabs" / "pool").mkdir(parents=True)
    (tmp_path / "fmabs" / "pool" / "pool.json").write_text("{")
    with pytest.raises(RunStateError, match="pool.json: the pool is not valid JSON"):
        format_status(tmp_path)


def test_status_lists_pseudo_label_rounds_with_the_guards_verdict(tmp_path):
    from nnunet_fmabs.pseudolabels.store import PseudoLabelStore

    LabeledPool.open(tmp_path / "fmabs" / "pool", 2, CASES)
    store = PseudoLabelStore(tmp_path / "fmabs" / "pseudolabels")
    assert "pseudo-label rounds: none yet" in format_status(tmp_path)
    for i, (yf, accepted) in enumerate(((0.81, True), (0.52, False))):
        index, partial = store.begin_round(f"teacher{i}")
        store.commit_round(index, partial, iteration=100 * (i + 1), reason="schedule",
                           stats={"prompted_slices": 40, "planes_dice_yf": yf, "planes_dice_teacher": 0.8,
                                  "accepted": accepted, "mean_dice_yf": 0.7, "mean_dice_teacher": 0.6})
    lines = format_status(tmp_path).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("pseudo-label rounds"))
    assert lines[start + 2].split()[:6] == ["0", "100", "40", "0.810", "0.800", "Y_f"]
    assert "expert planes (rejected)" in lines[start + 3] and "0.520" in lines[start + 3]
