"""Invariant 2 (issue 3): nothing of the dense labels reaches training but the expert's slices.

Change the dense labels (and nnU-Net's stored foreground locations) of every scan the expert never
gave, and a queried scan's labels off its three planes: the training batches stay byte-identical.
Change a queried scan's label on its expert plane: the batches change (so the comparison can fail).
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import blosc2
import numpy as np
import pytest
import torch

from tests.conftest import DATASET


def _batches(pp_root: Path, results: Path, monkeypatch, n: int = 4,
             after_answer=None) -> tuple[list[dict], list[str]]:
    """``after_answer(trainer)``: called once the expert has answered round 0, before any batch is drawn."""
    monkeypatch.setenv("nnUNet_preprocessed", str(pp_root))
    monkeypatch.setenv("nnUNet_results", str(results))
    from nnunet_fmabs.trainers import FMABSTrainer_RAND_MV

    folder = pp_root / DATASET
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # set by nnU-Net's run_training
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer = FMABSTrainer_RAND_MV(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    trainer.dataset_class = infer_dataset_class(trainer.preprocessed_dataset_folder)
    trainer._open_campaign()
    trainer._run_due_events()
    if after_answer is not None:
        after_answer(trainer)
    train, val = trainer.get_dataloaders()
    np.random.seed(0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the augmentation's float sums in one order (the suite ran this after other trainers)
    out = []
    try:
        for _ in range(n):
            b = next(train)
            out.append({"data": b["data"].numpy().copy(), "target": b["target"].numpy().tobytes(),
                        "keys": list(b["keys"])})
    finally:
        torch.set_num_threads(threads)
        train.finish()
    return out, trainer.pool.labeled_cases


def _same(batches: list[dict], reference: list[dict]) -> bool:
    """The same scans and patches, byte-identical targets (labels), images equal up to float rounding."""
    return len(batches) == len(reference) and all(
        b["keys"] == r["keys"] and b["target"] == r["target"] and b["data"].shape == r["data"].shape
        and np.allclose(b["data"], r["data"], rtol=0, atol=1e-5) for b, r in zip(batches, reference))


def _rewrite_seg(folder: Path, case: str, change) -> None:
    seg = np.asarray(blosc2.open(str(folder / f"{case}_seg.b2nd"), mode="r")[:])
    new = change(seg.copy())
    (folder / f"{case}_seg.b2nd").unlink()
    blosc2.asarray(np.ascontiguousarray(new), urlpath=str(folder / f"{case}_seg.b2nd"))


@pytest.fixture
def tiny_env(phantom_nnunet, monkeypatch):
    for k, v in phantom_nnunet["env"].items():
        if k.startswith(("FMABS_", "nnUNet_")):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("FMABS_BUDGET", "2")
    return phantom_nnunet


def test_dense_labels_of_unqueried_scans_never_reach_a_batch(tiny_env, tmp_path, monkeypatch):
    original = Path(tiny_env["env"]["nnUNet_preprocessed"])
    reference, labeled = _batches(original, tmp_path / "r1", monkeypatch)
    assert len(labeled) == 1  # round 0 of a budget of 2: one scan at random

    tampered = tmp_path / "preprocessed"
    shutil.copytree(original, tampered)
    data_folder = tampered / DATASET / "nnUNetPlans_3d_fullres"
    splits = json.loads((tampered / DATASET / "splits_final.json").read_text())
    unqueried = [c for c in splits[0]["train"] if c not in labeled]
    assert unqueried
    for case in unqueried:  # every dense label and every stored foreground location changes
        _rewrite_seg(data_folder, case, lambda s: np.where(s >= 0, 1 - np.clip(s, 0, 1), s))
        pkl = data_folder / f"{case}.pkl"
        props = pickle.loads(pkl.read_bytes())
        props["class_locations"] = {1: np.array([[0, 1, 1, 1]] * 5)}
        pkl.write_bytes(pickle.dumps(props))
    tampered_batches, labeled2 = _batches(tampered, tmp_path / "r2", monkeypatch)
    assert labeled2 == labeled
    assert _same(tampered_batches, reference)

    # the queried scan's dense labels OFF its three planes, changed once the expert has answered (the simulated
    # expert looks at the whole scan to choose its slices, as a person would): not read by training either
    pool = json.loads((tmp_path / "r2" / DATASET / "FMABSTrainer_RAND_MV__nnUNetPlans__3d_fullres" / "fold_0" /
                       "fmabs" / "pool" / "pool.json").read_text())
    case = labeled[0]
    s0, s1, s2 = pool["cases"][case]["slices"]

    def flip_off_planes(seg):
        off = np.ones(seg.shape[1:], bool)
        off[s0], off[:, s1], off[:, :, s2] = False, False, False
        seg[0][off] = np.where(seg[0][off] >= 0, 1 - np.clip(seg[0][off], 0, 1), seg[0][off])
        return seg

    flipped = tmp_path / "preprocessed_flipped"
    shutil.copytree(tampered, flipped)
    off_planes, labeled3 = _batches(flipped, tmp_path / "r2b", monkeypatch, after_answer=lambda trainer: _rewrite_seg(
        flipped / DATASET / "nnUNetPlans_3d_fullres", case, flip_off_planes))
    assert labeled3 == labeled and _same(off_planes, reference)

    # positive control: the expert's own plane of a queried scan does reach the batches

    def flip_plane(seg):
        seg[0, s0] = np.where(seg[0, s0] >= 0, 1 - np.clip(seg[0, s0], 0, 1), seg[0, s0])
        return seg

    _rewrite_seg(data_folder, case, flip_plane)
    changed, _ = _batches(tampered, tmp_path / "r3", monkeypatch)
    assert not _same(changed, reference)
