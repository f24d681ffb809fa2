"""geometry.py against nnU-Net's own planning, preprocessing and export on a tiny raw dataset.

The dataset (three synthetic NIfTI volumes) has anisotropic spacing whose largest axis is ITK's x,
so nnU-Net transposes ([2, 0, 1]); a non-identity, axis-aligned direction; a zero border, so
nnU-Net crops; and spacings that differ between cases, so two of them are resampled (one down,
one up) while the median case is not. A small label-2 cube is the marker whose position we follow.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nnunet_fmabs.annotation.geometry import (CaseGeometry, cropped_to_preprocessed, preprocessed_to_cropped,
                                              raw_numpy_index_to_itk, view_names)

DATASET_ID = 987
DATASET_NAME = "Dataset987_FmabsGeometry"
# index axis i follows S-I, j follows L-R, k follows A-P (a proper rotation, det +1)
DIRECTION = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)
ORIGIN = (-10.0, 5.0, 20.0)
# ITK size (i, j, k), ITK spacing (i, j, k), marker centre as raw numpy index (z, y, x)
CASES = {
    "tiny_000": ((30, 36, 28), (2.5, 1.0, 1.1), (9, 11, 7)),    # the median spacing: not resampled
    "tiny_001": ((26, 40, 30), (2.0, 0.9, 1.0), (10, 12, 8)),   # resampled down
    "tiny_002": ((24, 34, 26), (3.0, 1.2, 1.25), (8, 10, 7)),   # resampled up
}
LABELS = {"background": 0, "organ": 1, "marker": 2}

_DRIVER = textwrap.dedent("""
    import multiprocessing
    # nnU-Net's pools use 'spawn' (a fresh interpreter per worker, seconds each); 'fork' runs the same code
    _get_context = multiprocessing.get_context
    multiprocessing.get_context = lambda method=None: _get_context("fork")
    if __name__ == "__main__":
        from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
        from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess
        fpe = DatasetFingerprintExtractor({id}, 1, verbose=False)
        fpe.show_progress_bar = False
        fpe.num_foreground_voxels_for_intensitystats = 3e4  # only feeds intensity statistics
        fpe.run(overwrite_existing=True)
        plan_experiments([{id}])
        preprocess([{id}], configurations=["3d_fullres"], num_processes=[1], verbose=False, show_progress_bar=False)
""")


@dataclass
class TinyDataset:
    root: Path
    raw_dir: Path
    pp_dir: Path  # nnUNet_preprocessed/<dataset>
    config_dir: Path  # .../nnUNetPlans_3d_fullres
    plans: dict
    dataset_json: dict

    @property
    def cases(self) -> list[str]:
        return sorted(CASES)

    @property
    def transpose_forward(self) -> list[int]:
        return list(self.plans["transpose_forward"])

    def properties(self, case: str) -> dict:
        with open(self.config_dir / f"{case}.pkl", "rb") as f:
            return pickle.load(f)

    def seg(self, case: str) -> np.ndarray:
        import blosc2

        return np.asarray(blosc2.open(str(self.config_dir / f"{case}_seg.b2nd"), mode="r")[:])[0]

    def shape(self, case: str) -> tuple[int, int, int]:
        return tuple(self.seg(case).shape)

    def geometry(self, case: str) -> CaseGeometry:
        return CaseGeometry.from_properties(self.properties(case), self.transpose_forward, self.shape(case))

    def raw_image(self, case: str) -> Path:
        return self.raw_dir / "imagesTr" / f"{case}_0000.nii.gz"

    def raw_label(self, case: str) -> np.ndarray:
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(sitk.ReadImage(str(self.raw_dir / "labelsTr" / f"{case}.nii.gz")))


def write_raw_dataset(raw_dir: Path) -> None:
    import SimpleITK as sitk

    (raw_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw_dir / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for case, (size, spacing, marker) in CASES.items():
        z, y, x = size[::-1]
        img = np.zeros((z, y, x), np.float32)
        lab = np.zeros((z, y, x), np.uint8)
        img[3:z - 2, 4:y - 3, 2:x - 4] = rng.uniform(50, 100, (z - 5, y - 7, x - 6))  # zero border: cropped
        lab[6:z - 6, 8:y - 8, 5:x - 8] = 1
        mz, my, mx = marker
        lab[mz - 1:mz + 2, my - 1:my + 2, mx - 1:mx + 2] = 2
        img[lab == 1] += 100
        img[lab == 2] += 200
        for arr, path in ((img, raw_dir / "imagesTr" / f"{case}_0000.nii.gz"),
                          (lab, raw_dir / "labelsTr" / f"{case}.nii.gz")):
            im = sitk.GetImageFromArray(arr)
            im.SetSpacing(spacing)
            im.SetOrigin(ORIGIN)
            im.SetDirection(DIRECTION)
            sitk.WriteImage(im, str(path))
    (raw_dir / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR"}, "labels": LABELS, "numTraining": len(CASES), "file_ending": ".nii.gz"}))


def build_tiny_dataset(root: Path) -> TinyDataset:
    """Raw dataset + nnU-Net's real fingerprint, plans and 3d_fullres preprocessing (a subprocess: nnU-Net
    reads its folders from the environment when imported)."""
    raw_dir = root / "nnUNet_raw" / DATASET_NAME
    write_raw_dataset(raw_dir)
    env = dict(os.environ, nnUNet_raw=str(root / "nnUNet_raw"), nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
               nnUNet_results=str(root / "nnUNet_results"), OMP_NUM_THREADS="1", nnUNet_def_n_proc="1")
    driver = root / "plan_and_preprocess.py"
    driver.write_text(_DRIVER.format(id=DATASET_ID))
    r = subprocess.run([sys.executable, str(driver)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"nnU-Net planning/preprocessing failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    pp_dir = root / "nnUNet_preprocessed" / DATASET_NAME
    plans = json.loads((pp_dir / "nnUNetPlans.json").read_text())
    config_dir = pp_dir / plans["configurations"]["3d_fullres"]["data_identifier"]
    return TinyDataset(root, raw_dir, pp_dir, config_dir, plans, json.loads((raw_dir / "dataset.json").read_text()))


_CACHE: dict[str, TinyDataset] = {}


def get_tiny_dataset(tmp_path_factory) -> TinyDataset:
    """Built once per test session (test_human.py shares it)."""
    if "tiny" not in _CACHE:
        _CACHE["tiny"] = build_tiny_dataset(tmp_path_factory.mktemp("nnunet_tiny"))
    return _CACHE["tiny"]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyDataset:
    return get_tiny_dataset(tmp_path_factory)


def _marker_voxels(volume: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(i) for i in v) for v in np.argwhere(volume == 2)}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


# -- the dataset really exercises transpose, crop and resampling --------------------------------------
def test_dataset_is_transposed_cropped_and_resampled(tiny):
    assert tiny.transpose_forward == [2, 0, 1]
    resampled = []
    for case in tiny.cases:
        g = tiny.geometry(case)
        assert g.shape_cropped != g.shape_before_cropping  # the zero border was cropped
        assert g.raw_shape == tiny.raw_label(case).shape
        resampled.append(g.shape_cropped != g.shape_preprocessed)
    assert resampled == [False, True, True]
    assert tiny.properties("tiny_000")["sitk_stuff"]["direction"] == pytest.approx(DIRECTION)


# -- raw -> preprocessed ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_marker_lands_where_the_mapping_says(tiny, case):
    g, seg = tiny.geometry(case), tiny.seg(case)
    centre = CASES[case][2]  # raw numpy (z, y, x)
    p = [g.raw_to_pp(a, centre[g.raw_axis(a)]) for a in range(3)]
    assert None not in p
    assert seg[tuple(p)] == 2
    # and back: the preprocessed marker centre maps into the raw marker cube
    for a in range(3):
        assert abs(g.pp_to_raw(a, p[a]) - centre[g.raw_axis(a)]) <= 1
    # the ITK index a viewer shows for the marker centre
    itk = raw_numpy_index_to_itk(centre)
    assert [s["index"] for s in sorted(g.pp_slices_to_raw(p), key=lambda s: s["itk_axis"])] == \
           [pytest.approx(i, abs=1) for i in itk]


def test_marker_voxels_map_exactly_without_resampling(tiny):
    g, seg, raw = tiny.geometry("tiny_000"), tiny.seg("tiny_000"), tiny.raw_label("tiny_000")
    mapped = set()
    for v in _marker_voxels(raw):
        mapped.add(tuple(g.raw_to_pp(a, v[g.raw_axis(a)]) for a in range(3)))
    assert mapped == _marker_voxels(seg)


@pytest.mark.parametrize("case", sorted(CASES))
def test_raw_planes_resampled_onto_preprocessed_planes(tiny, case):
    g, seg, raw = tiny.geometry(case), np.clip(tiny.seg(case), 0, None), tiny.raw_label(case)
    centre = CASES[case][2]
    for a in range(3):
        p = g.raw_to_pp(a, centre[g.raw_axis(a)])
        raw_plane = np.take(raw, g.pp_to_raw(a, p), axis=g.raw_axis(a))
        mine, nnunet = g.raw_plane_to_pp(raw_plane, a), np.take(seg, p, axis=a)
        assert mine.shape == nnunet.shape
        if case == "tiny_000":
            np.testing.assert_array_equal(mine, nnunet)
        else:  # nnU-Net interpolates the one-hot seg linearly: borders may move by a voxel
            assert _dice(mine == 1, nnunet == 1) > 0.85
            assert (mine == nnunet).mean() > 0.9
            assert (mine == 2).any() and (nnunet == 2).any()


# -- preprocessed -> raw (export) --------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_export_agrees_with_nnunet_export(tiny, case):
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(tiny.plans)
    cm = pm.get_configuration("3d_fullres")
    lm = pm.get_label_manager(tiny.dataset_json)
    seg = np.clip(tiny.seg(case), 0, None)
    logits = torch.from_numpy(np.stack([(seg == c).astype(np.float32) for c in range(3)]))
    theirs = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, pm, cm, lm, tiny.properties(case), num_threads_torch=1)
    g = tiny.geometry(case)
    mine = g.pp_volume_to_raw(seg)
    assert mine.shape == theirs.shape == tiny.raw_label(case).shape
    if case == "tiny_000":
        np.testing.assert_array_equal(mine, theirs)
        np.testing.assert_array_equal(mine, tiny.raw_label(case))
    else:
        assert (mine == theirs).mean() > 0.98
        for label in (1, 2):
            assert _dice(mine == label, theirs == label) > 0.8
    # the export of single planes is the same nearest-neighbour map as the whole volume
    for a in range(3):
        p = g.shape_preprocessed[a] // 2
        np.testing.assert_array_equal(g.pp_plane_to_raw(np.take(seg, p, axis=a), a),
                                      np.take(mine, g.pp_to_raw(a, p), axis=g.raw_axis(a)))


# -- pure functions ----------------------------------------------------------------------------------
def test_index_rounding():
    assert list(preprocessed_to_cropped(np.arange(5), 5, 5)) == [0, 1, 2, 3, 4]
    # downsampling 10 -> 5: centres of pairs, rounded half up
    assert list(preprocessed_to_cropped(np.arange(5), 10, 5)) == [1, 3, 5, 7, 9]
    assert list(cropped_to_preprocessed(np.arange(10), 10, 5)) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # upsampling 4 -> 8
    assert list(preprocessed_to_cropped(np.arange(8), 4, 8)) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert preprocessed_to_cropped(0, 7, 3) == 1 and isinstance(preprocessed_to_cropped(0, 7, 3), int)
    # always inside the crop
    assert preprocessed_to_cropped(np.arange(3), 1, 3).tolist() == [0, 0, 0]


def _synthetic_geometry() -> CaseGeometry:
    props = {"shape_before_cropping": (12, 10, 9), "bbox_used_for_cropping": [[2, 10], [1, 9], [0, 9]],
             "shape_after_cropping_and_before_resampling": (8, 8, 9)}
    return CaseGeometry.from_properties(props, (1, 2, 0), (8, 16, 5))


def test_planes_round_trip_and_layout():
    g = _synthetic_geometry()
    assert g.raw_shape == (9, 12, 10) and g.transpose_backward == (2, 0, 1)
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 5, g.raw_shape)
    transposed = raw.transpose(g.transpose_forward)[2:10, 1:9, 0:9]
    for a in range(3):
        for p in range(g.shape_preprocessed[a]):
            raw_plane = np.take(raw, g.pp_to_raw(a, p), axis=g.raw_axis(a))
            pp_plane = g.raw_plane_to_pp(raw_plane, a)
            # the same as indexing the transposed crop with the per-axis nearest indices
            idx = [preprocessed_to_cropped(np.arange(n), c, n)
                   for n, c in zip(g.shape_preprocessed, g.shape_cropped)]
            idx[a] = np.array([preprocessed_to_cropped(p, g.shape_cropped[a], g.shape_preprocessed[a])])
            expected = transposed[np.ix_(*idx)]
            np.testing.assert_array_equal(pp_plane, np.squeeze(expected, axis=a))
            back = g.pp_plane_to_raw(pp_plane, a, fill=-1)
            assert back.shape == raw_plane.shape
            # inside the crop, mapping back and forth again is stable
            np.testing.assert_array_equal(g.raw_plane_to_pp(np.where(back < 0, 0, back), a), pp_plane)


def test_pp_plane_to_raw_fills_outside_the_crop():
    g = _synthetic_geometry()
    plane = g.pp_plane_to_raw(np.ones((16, 5), np.uint8), 0, fill=0)  # pp axis 0 = raw numpy axis 1
    assert plane.shape == (9, 10)  # raw (z, x)
    assert plane[:, 0].sum() == 0 and plane[:, 9].sum() == 0  # transposed axis 1 crop is 1:9
    assert plane[:, 1:9].all()


def test_from_properties_rejects_bad_input():
    props = {"shape_before_cropping": (12, 10, 9), "bbox_used_for_cropping": [[2, 10], [1, 9], [0, 9]],
             "shape_after_cropping_and_before_resampling": (8, 8, 8)}
    with pytest.raises(ValueError, match="inconsistent"):
        CaseGeometry.from_properties(props, (0, 1, 2), (8, 8, 8))
    with pytest.raises(ValueError, match="permutation"):
        CaseGeometry.from_properties(props, (0, 0, 2), (8, 8, 8))
    with pytest.raises(ValueError, match="lack"):
        CaseGeometry.from_properties({}, (0, 1, 2), (8, 8, 8))
    g = _synthetic_geometry()
    with pytest.raises(IndexError):
        g.pp_to_raw(1, 16)
    assert g.raw_to_pp(0, 1) is None and g.raw_to_pp(0, 2) == 0
    with pytest.raises(ValueError, match="shape"):
        g.raw_plane_to_pp(np.zeros((3, 3)), 0)


def test_view_names():
    assert view_names((1, 0, 0, 0, 1, 0, 0, 0, 1)) == ("sagittal", "coronal", "axial")
    assert view_names(DIRECTION) == ("axial", "sagittal", "coronal")
    assert view_names((-1, 0, 0, 0, 0, -1, 0, 1, 0)) == ("sagittal", "axial", "coronal")
    c, s = np.cos(np.pi / 9), np.sin(np.pi / 9)  # 20 degrees oblique about z: still named by the dominant axis
    assert view_names((c, -s, 0, s, c, 0, 0, 0, 1)) == ("sagittal", "coronal", "axial")
