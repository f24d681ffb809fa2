"""Issue 3: a real barely labeled dataset, whose labels declare nnU-Net's ignore label.

Its scans carry their own sparse labels (three planes, ignore elsewhere) for a few scans and none
for the rest; the pool takes them as round 0 (expert "dataset") and training runs on them.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import SimpleITK as sitk

from nnunet_fmabs.workspace import NnUNetWorkspace
from tests.conftest import TINY, run_cli

DATASET_ID = "993"
NAME = "Dataset993_BarelyLabeled"


def test_dataset_with_ignore_label_trains_on_its_own_slices(phantom_nnunet, plugin_path, tmp_path):
    src = phantom_nnunet["root"] / "raw" / phantom_nnunet["dataset"]
    raw = tmp_path / "raw"
    dst = raw / NAME
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("imagesTs", "labelsTs"))
    meta = json.loads((dst / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "organ": 1, "ignore": 2}
    (dst / "dataset.json").write_text(json.dumps(meta))
    labels = sorted((dst / "labelsTr").glob("*.nii.gz"))
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    cases = [p.name[: -len(".nii.gz")] for p in labels]
    fold0_train = generate_crossval_split(cases, seed=12345, n_splits=5)[0]["train"]
    to_label = sorted(fold0_train)[:2]
    for path in labels:
        img = sitk.ReadImage(str(path))
        dense = sitk.GetArrayFromImage(img)
        sparse = np.full_like(dense, 2)
        if path.name[: -len(".nii.gz")] in to_label:  # two scans labeled on three planes through the organ, the others not at all
            z, y, x = (int(np.median(a)) for a in np.nonzero(dense))
            sparse[z], sparse[:, y], sparse[:, :, x] = dense[z], dense[:, y], dense[:, :, x]
        out = sitk.GetImageFromArray(sparse)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(path))

    workspace = NnUNetWorkspace(tmp_path, folder_names=("raw", "pp", "res")).create()
    workspace.plan(int(DATASET_ID), **TINY)
    env = workspace.env(**{**TINY, "FMABS_BUDGET": "2"}, PYTHONPATH=os.pathsep.join([str(plugin_path), os.getcwd()]))
    run_cli(["nnUNetv2_train", DATASET_ID, "3d_fullres", "0", "-tr", "SupCrossTrainer", "-device", "cpu"], env)

    fold = tmp_path / "res" / NAME / "SupCrossTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    pool = json.loads((fold / "fmabs" / "pool" / "pool.json").read_text())
    assert pool["rounds"][0]["expert"] == "dataset"
    assert sorted(pool["cases"]) == to_label
