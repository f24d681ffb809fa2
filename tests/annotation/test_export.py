"""``nnunet-fmabs export-pool``: the labeled pool as an nnU-Net raw dataset with the ignore label."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_fmabs.annotation.export import ExportError, export_pool, ignore_label_value
from nnunet_fmabs.annotation.pool import CrossAnnotation, LabeledPool
from nnunet_fmabs.workspace import NnUNetWorkspace
from tests.conftest import DATASET, TINY, run_cli

TRAINER_DIR = "FMABSTrainer_RAND_MV__nnUNetPlans__3d_fullres"


@pytest.fixture
def run_with_pool(phantom_nnunet, tmp_path, monkeypatch):
    """A fold folder as an FM-ABS run leaves it: plans.json and dataset.json beside it, a pool with two
    answered scans (their ground truth's planes) and a third one pending."""
    raw = Path(phantom_nnunet["env"]["nnUNet_raw"])
    pp = Path(phantom_nnunet["env"]["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(pp))
    trainer_dir = tmp_path / "results" / DATASET / TRAINER_DIR
    run_dir = trainer_dir / "fold_0"
    (run_dir / "fmabs" / "pool").mkdir(parents=True)
    shutil.copy(pp / DATASET / "nnUNetPlans.json", trainer_dir / "plans.json")
    shutil.copy(pp / DATASET / "dataset.json", trainer_dir / "dataset.json")
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    folder = pp / DATASET / "nnUNetPlans_3d_fullres"
    cases = sorted(p.name[:-len(".pkl")] for p in folder.glob("*.pkl"))
    pool = LabeledPool.open(run_dir / "fmabs" / "pool", budget=3, training_cases=cases)
    seg = {c: np.asarray(infer_dataset_class(str(folder))(str(folder), [c]).load_case(c)[1][0]) for c in cases[:2]}
    slices = {c: (3, 17, 30) for c in cases[:2]}
    pool.add_query(cases[:2], slices, expert="simulated", sampler="random", iteration=0)
    pool.answer({c: CrossAnnotation.from_dense(seg[c], slices[c]) for c in cases[:2]},
                {c: seg[c].shape for c in cases[:2]})
    pool.add_query(cases[2:3], {cases[2]: (1, 2, 3)}, expert="human", sampler="random", iteration=5)
    return {"run_dir": run_dir, "cases": cases, "raw": raw, "slices": slices}


def test_export_writes_the_planes_on_the_raw_grid_and_ignore_elsewhere(run_with_pool, tmp_path):
    out = export_pool(run_with_pool["run_dir"], tmp_path / "raw2" / "Dataset501_Pool", progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    assert list(meta["labels"].values()) == [0, 1, 2] and meta["labels"]["ignore"] == 2
    assert meta["numTraining"] == 2 and meta["fmabs_export"]["labeled_scans"] == run_with_pool["cases"][:2]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in run_with_pool["cases"][:2]]
    for case in run_with_pool["cases"][:2]:
        raw_image = run_with_pool["raw"] / DATASET / "imagesTr" / f"{case}_0000.nii.gz"
        assert (out / "imagesTr" / raw_image.name).read_bytes() == raw_image.read_bytes()
        label_img = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))
        gt_img = sitk.ReadImage(str(run_with_pool["raw"] / DATASET / "labelsTr" / f"{case}.nii.gz"))
        assert label_img.GetSpacing() == gt_img.GetSpacing() and label_img.GetOrigin() == gt_img.GetOrigin()
        label, gt = sitk.GetArrayFromImage(label_img), sitk.GetArrayFromImage(gt_img)
        # the phantom is preprocessed without transposition or resampling: plane a is raw numpy axis a
        planes = np.zeros(label.shape, dtype=bool)
        for a, index in enumerate(run_with_pool["slices"][case]):
            sel = [slice(None)] * 3
            sel[a] = index
            planes[tuple(sel)] = True
        assert np.array_equal(label[planes], gt[planes])
        assert (label[~planes] == 2).all()
        assert gt[planes].any()  # the planes hold the organ: the check above is not all background


def test_export_refuses_what_it_cannot_do(run_with_pool, tmp_path):
    taken = tmp_path / "Dataset502_Taken"
    taken.mkdir()
    with pytest.raises(ExportError, match="already exists"):
        export_pool(run_with_pool["run_dir"], taken, progress=False)
    with pytest.raises(ExportError, match="DatasetXXX_Name"):
        export_pool(run_with_pool["run_dir"], tmp_path / "pool_out", progress=False)
    with pytest.raises(FileNotFoundError, match="pool.json is missing"):
        export_pool(tmp_path, tmp_path / "Dataset503_X", progress=False)
    with pytest.raises(ExportError, match="region-based"):
        ignore_label_value({"background": 0, "whole": [1, 2]})
    assert ignore_label_value({"background": 0, "a": 1, "b": 2}) == 3
    assert ignore_label_value({"background": 0, "a": 1, "ignore": 7}) == 7
    assert not list(tmp_path.glob(".Dataset*partial*"))


@pytest.mark.slow
def test_exported_pool_trains_with_stock_nnunet(run_with_pool, phantom_nnunet, tmp_path, monkeypatch):
    """The CLI exports; stock nnU-Net plans and preprocesses the export (nnUNetv2_plan_and_preprocess)
    and its own nnUNetTrainer trains on it with the ignore label, then validates (in this process, with
    5 iterations instead of 250 per epoch: the stock training loop, a test-sized schedule)."""
    raw = tmp_path / "raw"
    proc = run_cli(["nnunet-fmabs", "export-pool", str(run_with_pool["run_dir"]), str(raw / "Dataset504_Pool")],
                   phantom_nnunet["env"])
    assert "2 labeled scans" in proc.stdout and "nnUNetv2_train 504 3d_fullres all" in proc.stdout
    workspace = NnUNetWorkspace(tmp_path, folder_names=("raw", "pp", "res")).create()
    workspace.plan(504, **TINY)
    env = workspace.env(**TINY)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA", "nnUNet_compile"):
        monkeypatch.setenv(k, env[k])
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    pp = tmp_path / "pp" / "Dataset504_Pool"
    plans = json.loads((pp / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # what nnU-Net's run_training sets
    trainer = nnUNetTrainer(plans, "3d_fullres", "all", json.loads((pp / "dataset.json").read_text()),
                            device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 5, 1
    trainer.run_training()
    assert trainer.label_manager.has_ignore_label and trainer.label_manager.ignore_label == 2
    trainer.perform_actual_validation()
    fold = Path(trainer.output_folder)
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
