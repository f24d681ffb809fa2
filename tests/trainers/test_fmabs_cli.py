"""FM-ABS trainers through the stock nnU-Net CLI on the tiny phantom (issues 3, 5, 6, 8).

The generalist here is the cheap entry-point plugin ``box_threshold`` (tests/plugins); the real
LiteMedSAM runs in tests/generalists and in tests/pseudolabels/test_label_volume.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnunet_fmabs.runstate import run_state
from tests.conftest import fold_dir, run_cli

HER = "FMABSTrainer_HER_MV"
# t_max = 8 iterations: active rounds of 1 scan at t = 0, 2, 4 (over half of training, not the default quarter, so
# that every round has its own epoch to be killed in); pseudo-label rounds at t = 2, 4, 6
HER_ENV = {"FMABS_EPOCHS": "4", "FMABS_ITERATIONS_PER_EPOCH": "2", "FMABS_BUDGET": "3", "FMABS_K": "1",
           "FMABS_AL_SPREAD": "0.5", "FMABS_PL_ROUNDS": "0.25,0.5,0.75"}


def train(run: dict, trainer: str, *extra: str, env: dict | None = None, check: bool = True):
    e = {**run["env"], **(env or {})}
    return run_cli(["nnUNetv2_train", run["id"], "3d_fullres", "0", "-tr", trainer, "-device", "cpu", *extra], e,
                   check=check)


@pytest.fixture(scope="module")
def uninterrupted_her(phantom_nnunet, plugin_path, tmp_path_factory):
    """One uninterrupted HER run: the reference for every crash-and-resume test."""
    import os

    tmp = tmp_path_factory.mktemp("her_reference")
    env = dict(phantom_nnunet["env"])
    env.update(HER_ENV, nnUNet_results=str(tmp / "results"), FMABS_GENERALIST="box_threshold",
               PYTHONPATH=os.pathsep.join([str(plugin_path), str(Path(__file__).resolve().parents[2])]))
    run = {**phantom_nnunet, "env": env}
    train(run, HER)
    folder = fold_dir(run, HER)
    return {"run": run, "folder": folder, "state": run_state(folder)}


def test_her_run_labels_rounds_and_pseudo_labels(uninterrupted_her):
    folder, state = uninterrupted_her["folder"], uninterrupted_her["state"]
    assert (folder / "checkpoint_final.pth").is_file()
    assert [r[1] for r in state["rounds"]] == ["answered"] * 3
    assert len({c for r in state["rounds"] for c in r[2]}) == 3  # three different scans, none twice
    pool = json.loads((folder / "fmabs" / "pool" / "pool.json").read_text())
    assert [r["sampler"] for r in pool["rounds"]] == ["random", "HER", "HER"]
    assert [r["iteration"] for r in pool["rounds"]] == [0, 2, 4]
    assert [it for it, _ in state["pseudo_labels"]] == [2, 4, 6]
    assert all(len(cases) == 4 for _, cases in state["pseudo_labels"])  # every training scan
    assert (folder / "fmabs" / "active_learning_curve.csv").is_file()
    assert (folder / "fmabs" / "active_learning_curve.png").is_file()
    assert (folder / "fmabs" / "loss_terms.png").is_file()
    assert list((folder / "fmabs" / "pseudolabels" / "round_00").glob("*.png"))
    log = "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    for term in ("loss_cross", "loss_sam", "loss_cons", "lambda_sam", "lambda_c"):
        assert term in log
    # the run's own metrics go through nnU-Net's logger (W&B sees them when enabled): one value per epoch
    import torch

    logged = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
    n_epochs = len(logged["train_losses"])
    labeled, rounds = logged["fmabs_labeled_scans"], logged["fmabs_pl_rounds"]
    assert len(labeled) == len(rounds) == len(logged["fmabs_pl_dice_yf_planes"]) == n_epochs
    assert labeled == sorted(labeled) and labeled[-1] == 3 and rounds[-1] == 3
    assert 0 <= logged["fmabs_pl_dice_yf_planes"][-1] <= 1 and 0 <= logged["fmabs_pl_dice_teacher_planes"][-1] <= 1
    assert logged["fmabs_pl_accepted"][-1] in (0.0, 1.0)
    # Y_f carries the expert's labels on the expert's slices
    ann_case = pool["rounds"][0]["cases"][0]
    with np.load(folder / "fmabs" / "pool" / pool["cases"][ann_case]["file"]) as z:
        s0, plane0 = int(z["slices"][0]), z["axis0"]
    with np.load(folder / "fmabs" / "pseudolabels" / "round_00" / f"{ann_case}.npz") as z:
        y = z["y"]
    assert np.array_equal(y[s0], plane0)


@pytest.mark.parametrize("kills", [("after_query:3", "mid_epoch:1"), ("after_answer:2", "before_pseudo_label_commit:1"),
                                   ("pseudo_label_case:2", "checkpoint_write:1")])
def test_killed_run_resumes_to_the_same_state(uninterrupted_her, tmp_path, kills):
    """Killed at one point, resumed and killed again at another, then resumed to the end (two kill points
    per run keep the number of nnU-Net processes down): the same state, teacher and student weights."""
    run = {**uninterrupted_her["run"], "env": {**uninterrupted_her["run"]["env"],
                                                "nnUNet_results": str(tmp_path / "results")}}
    for i, kill_at in enumerate(kills):
        killed = train(run, HER, *(["--c"] if i else []), env={"FMABS_CRASH_AT": kill_at}, check=False)
        assert killed.returncode == -9, (kill_at, killed.stderr[-3000:])
    train(run, HER, "--c")
    folder = fold_dir(run, HER)
    assert (folder / "checkpoint_final.pth").is_file()
    assert run_state(folder) == uninterrupted_her["state"]
    assert not list(folder.rglob(".tmp-*")), "temporary files left behind"
    # the same teacher (and student) as the run that was never stopped
    import torch

    mine = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    ref = torch.load(uninterrupted_her["folder"] / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    for part in ("teacher",):
        for k, v in ref["fmabs"][part].items():
            assert torch.equal(mine["fmabs"][part][k], v), k
    for k, v in ref["network_weights"].items():
        assert torch.equal(mine["network_weights"][k], v), k


def test_resume_with_other_settings_is_refused(uninterrupted_her, tmp_path):
    run = {**uninterrupted_her["run"], "env": {**uninterrupted_her["run"]["env"],
                                                "nnUNet_results": str(tmp_path / "results")}}
    killed = train(run, HER, env={"FMABS_CRASH_AT": "after_answer:2"}, check=False)
    assert killed.returncode == -9
    proc = train(run, HER, "--c", env={"FMABS_BUDGET": "2"}, check=False)
    assert proc.returncode != 0
    assert "FMABS_BUDGET" in proc.stdout + proc.stderr
    # and a new run (no --c) into a folder holding labels is refused, the labels untouched
    before = (fold_dir(run, HER) / "fmabs" / "pool" / "pool.json").read_bytes()
    proc = train(run, HER, check=False)
    assert proc.returncode != 0 and "--c" in proc.stdout + proc.stderr
    assert (fold_dir(run, HER) / "fmabs" / "pool" / "pool.json").read_bytes() == before


def test_sup_cross_loss_falls_and_uses_only_the_budget(nnunet_run):
    env = {"FMABS_EPOCHS": "6", "FMABS_ITERATIONS_PER_EPOCH": "3", "FMABS_BUDGET": "2"}
    train(nnunet_run, "SupCrossTrainer", env=env)
    folder = fold_dir(nnunet_run, "SupCrossTrainer")
    pool = json.loads((folder / "fmabs" / "pool" / "pool.json").read_text())
    assert len(pool["rounds"]) == 1 and len(pool["rounds"][0]["cases"]) == 2  # all at t = 0, at random
    assert pool["rounds"][0]["sampler"] == "random"
    import torch

    ckpt = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    losses = ckpt["logging"]["train_losses"]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert not (folder / "fmabs" / "pseudolabels" / "round_00").exists()  # no generalist in this baseline
