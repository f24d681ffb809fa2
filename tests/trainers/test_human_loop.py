"""Issue 3: the human expert loop through the stock CLI.

Run until the first query (exit 3 with instructions), label the three slices in the NIfTI files
as a person would in ITK-SNAP, resume with `--c`, and find exactly those labels in the pool.
"""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from tests.conftest import fold_dir
from tests.trainers.test_fmabs_cli import train

TRAINER = "SupCrossTrainer"


def test_query_edit_resume(nnunet_run):
    env = {"FMABS_EXPERT": "human", "FMABS_BUDGET": "2"}
    first = train(nnunet_run, TRAINER, env=env, check=False)
    assert first.returncode == 3, first.stderr[-3000:]
    folder = fold_dir(nnunet_run, TRAINER)
    query_dir = folder / "fmabs" / "queries" / "round_00"
    queries = json.loads((query_dir / "queries.json").read_text())
    message = first.stderr
    assert str(query_dir) in message and "--c" in message
    assert (folder / "checkpoint_latest.pth").is_file()

    # a person labels the three listed slices of every queried scan (a square per plane)
    expected = {}
    for case, scan in queries["scans"].items():
        path = scan["file"]
        img = sitk.ReadImage(path)
        arr = sitk.GetArrayFromImage(img)  # (z, y, x) = ITK index (k, j, i) reversed
        arr[:] = 0
        i, j, k = scan["slices_ijk"]  # 0-based ITK index of the plane along i, j, k
        arr[k, 5:15, 5:15] = 1
        arr[5:15, j, 5:15] = 1
        arr[5:15, 5:15, i] = 1
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(img)
        sitk.WriteImage(out, path)
        expected[case] = (i, j, k)

    second = train(nnunet_run, TRAINER, "--c", env=env)
    assert (folder / "checkpoint_final.pth").is_file()
    pool = json.loads((folder / "fmabs" / "pool" / "pool.json").read_text())
    assert sorted(pool["cases"]) == sorted(expected)
    assert pool["rounds"][0]["status"] == "answered" and pool["rounds"][0]["expert"] == "human"
    for case, info in pool["cases"].items():
        with np.load(folder / "fmabs" / "pool" / info["file"]) as z:
            planes = [z["axis0"], z["axis1"], z["axis2"]]
        # the phantom is not resampled or transposed: each plane holds the person's square
        assert all(int(p.sum()) == 100 for p in planes), [int(p.sum()) for p in planes]
    assert "round 0" in "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    assert second.returncode == 0
