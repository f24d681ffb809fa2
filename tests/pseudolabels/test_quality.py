"""The ground-truth-free quality signal and the round guard (issue 12): the expert's planes as yardstick."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from nnunet_fmabs.campaign.pseudo_round import cross_target, pseudo_label_round
from nnunet_fmabs.pseudolabels.quality import PlaneAgreement, plane_overlap, round_accepted, sam_target_trusted

IGNORE = 2


def _cross():
    cross = np.full((4, 5, 6), IGNORE, np.int16)
    cross[1] = 0  # the expert's plane of axis 0: 30 voxels
    cross[1, 1:3, 1:4] = 1  # 6 foreground voxels
    return cross


def test_plane_overlap_counts_only_the_experts_voxels():
    cross = _cross()
    mask = np.zeros(cross.shape, bool)
    mask[:, 1:3, 1:3] = True  # on the plane: 4 voxels, all foreground for the expert; 12 more off the plane
    assert plane_overlap(mask, cross, IGNORE) == (8, 10)  # Dice 2 * 4 / (4 + 6)
    assert plane_overlap(np.zeros(cross.shape), cross, IGNORE) == (0, 6)
    with pytest.raises(ValueError, match="differ in shape"):
        plane_overlap(mask[:2], cross, IGNORE)


def test_plane_agreement_pools_cases_and_round_trips():
    cross = _cross()
    teacher = cross == 1
    fused = np.zeros(cross.shape, bool)
    fused[1, 1:3, 1:2] = True  # 2 of the expert's 6
    a = PlaneAgreement.of_case(fused, teacher, cross, IGNORE)
    assert (a.yf_overlap, a.yf_total, a.teacher_overlap, a.teacher_total, a.voxels) == (4, 8, 12, 12, 30)
    assert a.dice_yf == 0.5 and a.dice_teacher == 1.0
    b = PlaneAgreement.of_case(teacher, teacher, cross, IGNORE)
    pooled = a + b
    assert pooled.dice_yf == (4 + 12) / (8 + 12) and pooled.voxels == 60
    assert PlaneAgreement.from_array(pooled.as_array()) == pooled


def test_round_accepted_within_the_margin():
    good = PlaneAgreement(90, 100, 92, 100, 500)  # 0.90 vs 0.92
    assert round_accepted(good, 0.05) and not round_accepted(good, 0.01)
    assert not round_accepted(PlaneAgreement(60, 100, 90, 100, 500), 0.05)
    assert round_accepted(PlaneAgreement(), 0.05)  # no expert planes: nothing to judge by


class _Everything:
    """A generalist that marks the whole slice: Y_f is far worse than the teacher on the expert's planes."""

    def __init__(self):
        self.slices = 0  # slices it was asked to segment

    def segment(self, slices, boxes, points=None):
        self.slices += len(slices)
        return [np.ones(np.shape(s), bool) for s in slices]


def _trainer_with_a_true_teacher(trainer_inputs, phantom_nnunet, monkeypatch, **env):
    """An in-process FM-ABS trainer after round 0 whose teacher mask is the scan's dense truth."""
    for k, v in phantom_nnunet["env"].items():
        if k.startswith(("FMABS_", "nnUNet_raw")):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("FMABS_BUDGET", "2")
    env.setdefault("FMABS_EXPERT_PROMPT_GROWTH_MM", "off")  # no round before training unless a test asks for it
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    plans, dataset_json = trainer_inputs
    plans["continue_training"] = False
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_fmabs.trainers import FMABSTrainer_RAND_MV

    trainer = FMABSTrainer_RAND_MV(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    trainer.dataset_class = infer_dataset_class(trainer.preprocessed_dataset_folder)
    trainer._open_campaign()
    trainer._run_due_events()
    load = trainer.campaign.source.load_case
    last = {}

    def remember(case):
        out = load(case)
        last["seg"] = np.asarray(out[1][0]) > 0
        return out

    monkeypatch.setattr(trainer.campaign.source, "load_case", remember)
    monkeypatch.setattr(trainer.campaign, "predict",
                        lambda net, data: np.stack([~last["seg"], last["seg"]]).astype(np.float32))
    return trainer


@pytest.mark.parametrize("guard", ["planes", "off"])
def test_a_round_worse_than_the_teacher_is_not_trained_on(trainer_inputs, phantom_nnunet, monkeypatch, guard):
    from nnunet_fmabs.pseudolabels.store import PseudoLabelStore

    trainer = _trainer_with_a_true_teacher(trainer_inputs, phantom_nnunet, monkeypatch, FMABS_PL_GUARD=guard,
                                           FMABS_LIMIT_TO_TEACHER_MM="off",
                                           FMABS_EXPERT_BOUNDS_MM="off")  # the teacher prompts every scan
    generalist = trainer.campaign._generalist = _Everything()
    logged = []
    monkeypatch.setattr(trainer.campaign, "log", logged.append)
    summary = pseudo_label_round(trainer.campaign, 10, "test", trainer.teacher)
    entry = trainer.pl_store.rounds[-1]
    assert entry["planes_dice_teacher"] == 1.0 and entry["planes_dice_yf"] < 0.5
    assert entry["accepted"] is (guard == "off")
    # the log names the bar Y_f missed: the teacher's Dice on the planes minus the (default, negative) margin
    assert any("< 1.030 (teacher 1.000, margin -0.03)" in m for m in logged) is (guard != "off")
    labeled = trainer.pool.labeled_cases
    unlabeled = [c for c in trainer.pool.training_cases if c not in labeled]
    assert labeled and unlabeled and generalist.slices == summary["prompted_slices"] > 0
    # rejected on the labeled scans (prompted first), the others are never prompted
    assert summary.get("unprompted_cases", 0) == (0 if guard == "off" else len(unlabeled))
    for path in sorted(trainer.pl_store.latest_dir.glob("*.npz")):
        with np.load(path) as z:
            y = z["y"]
            assert PseudoLabelStore.load_teacher(path).shape == y.shape
            if guard == "off":
                assert "y_generalist" not in z and (y == 1).mean() > 0.3
                continue
            if path.stem in labeled:  # the expert's planes only
                assert (z["y_generalist"] == 1).mean() > 0.3  # the generalist's answer is kept for inspection
                cross = cross_target(trainer.campaign.source, path.stem, trainer.campaign.label_sources(), y.shape)
                expected = np.where((cross >= 0) & (cross != trainer.ignore_value), cross, trainer.ignore_value)
                np.testing.assert_array_equal(y, expected)
            else:  # never prompted: nothing of the generalist's to keep
                assert "y_generalist" not in z and (y == trainer.ignore_value).all()
    state = json.loads((trainer.pl_store.folder / "state.json").read_text())
    assert state["rounds"][-1]["accepted"] is (guard == "off")


def test_prompts_on_raw_slices_where_the_training_grid_is_coarser(trainer_inputs, phantom_nnunet, monkeypatch,
                                                                  tmp_path):
    """FMABS_PROMPT_RESOLUTION=raw reads the raw image (nnUNet_raw) and maps it voxel for voxel; on the
    phantom the raw and training grids coincide, so a plan that claims a coarser grid must give the same
    Y_f as the grid (the stand-in is invariant to nnU-Net's intensity normalisation)."""
    from nnunet_fmabs.demo import DemoBoxGeneralist
    from nnunet_fmabs.pseudolabels import labeler

    results = {}
    for resolution in ("grid", "raw", "auto"):
        plans, dataset_json = trainer_inputs
        plans["configurations"]["3d_fullres"]["spacing"] = [2.5, 2.5, 2.5]  # claims a coarser training grid
        trainer = _trainer_with_a_true_teacher(trainer_inputs, phantom_nnunet, monkeypatch,
                                               FMABS_PROMPT_RESOLUTION=resolution, FMABS_PL_GUARD="off",
                                               FMABS_BOX_GROWTH_MM="0",  # the grids differ in mm per pixel
                                               FMABS_EXPERT_BOUNDS_MM="off",  # grid slices only: same recipe
                                               nnUNet_results=str(tmp_path / resolution))
        calls = []
        original = labeler.label_volume_fine
        monkeypatch.setattr("nnunet_fmabs.campaign.pseudo_round.label_volume_fine",
                            lambda *a, **k: calls.append(k["fine_spacing"]) or original(*a, **k))
        trainer.campaign._generalist = DemoBoxGeneralist()
        summary = pseudo_label_round(trainer.campaign, 10, "test", trainer.teacher)
        assert len(calls) == summary["raw_slice_cases"] == (0 if resolution == "grid" else
                                                            len(trainer.campaign.pool.training_cases))
        assert all(list(c) == [1.25, 1.25, 1.25] for c in calls)
        results[resolution] = {p.stem: np.load(p)["y"] for p in trainer.pl_store.latest_dir.glob("*.npz")}
        if resolution == "auto":  # without the raw images auto falls back to the grid's slices; raw stops
            monkeypatch.setattr(trainer.campaign.source, "raw_image", lambda case: None)
            calls.clear()
            assert pseudo_label_round(trainer.campaign, 11, "test", trainer.teacher)["raw_slice_cases"] == 0
            assert not calls
            monkeypatch.setattr(trainer.campaign, "settings",
                                dataclasses.replace(trainer.campaign.settings, prompt_resolution="raw"))
            with pytest.raises(FileNotFoundError, match="no raw image of"):
                pseudo_label_round(trainer.campaign, 12, "test", trainer.teacher)
    assert results["grid"].keys() == results["raw"].keys() == results["auto"].keys()
    for case in results["grid"]:
        np.testing.assert_array_equal(results["grid"][case], results["raw"][case])
        np.testing.assert_array_equal(results["grid"][case], results["auto"][case])


@pytest.mark.parametrize("pl_source", ["teacher", "ground_truth"])
def test_pseudo_label_ablations_train_on_the_teacher_or_the_truth_without_a_generalist(
        trainer_inputs, phantom_nnunet, monkeypatch, tmp_path, pl_source):
    """FMABS_PL_SOURCE=teacher: Y_f is the teacher's own mask (self-training: the generalist's share of FM-ABS
    is the difference); ground_truth: the dense truth (a perfect generalist). No generalist is built, nothing
    is prompted, the expert's planes still replace Y_f on labeled scans."""
    import types

    from nnunet_fmabs.trainers import fmabs_trainer

    trainer = _trainer_with_a_true_teacher(trainer_inputs, phantom_nnunet, monkeypatch, FMABS_PL_SOURCE=pl_source,
                                           FMABS_PL_GUARD="off", nnUNet_results=str(tmp_path / pl_source))
    monkeypatch.setattr(trainer.campaign, "_generalist_factory", lambda: pytest.fail("a generalist was built"))
    true_teacher = trainer.campaign.predict  # a teacher 2 voxels off the truth: both sources differ from it
    monkeypatch.setattr(trainer.campaign, "predict", lambda net, data: np.roll(true_teacher(net, data), 2, axis=1))
    summary = pseudo_label_round(trainer.campaign, 10, "test", trainer.teacher)
    assert summary["prompted_slices"] == 0 and summary["raw_slice_cases"] == 0
    assert summary["mean_dice_teacher"] < 0.9
    if pl_source == "ground_truth":
        assert summary["mean_dice_yf"] == 1.0
    else:  # the teacher's mask with the expert's planes put back: a little better than the teacher, still off
        assert summary["mean_dice_teacher"] <= summary["mean_dice_yf"] < 0.95
    source, labeled = trainer.campaign.source, trainer.pool.labeled_cases
    for path in sorted(trainer.pl_store.latest_dir.glob("*.npz")):
        truth = np.asarray(source.load_case(path.stem)[1][0]) > 0
        expected = truth if pl_source == "ground_truth" else np.roll(truth, 2, axis=0)
        y = np.load(path)["y"]
        if path.stem in labeled:  # the expert's planes, whatever the source
            cross = cross_target(source, path.stem, trainer.campaign.label_sources(), y.shape)
            on_planes = (cross >= 0) & (cross != trainer.ignore_value)
            np.testing.assert_array_equal(y[on_planes], cross[on_planes])
            np.testing.assert_array_equal(y[~on_planes], expected[~on_planes])
        else:
            np.testing.assert_array_equal(y, expected)
    if pl_source == "ground_truth":  # a barely labeled dataset has no truth to train on: stops at the start
        monkeypatch.setattr(fmabs_trainer, "nnunet_case_source",
                            lambda trainer: types.SimpleNamespace(has_ignore_label=True))
        with pytest.raises(ValueError, match="FMABS_PL_SOURCE=ground_truth .* ignore label"):
            trainer._open_campaign()


def test_sam_target_trusted_only_when_yf_is_not_below_the_teacher_on_the_planes():
    # before any round, and after a rejected round (the target is then the expert's planes): trusted
    assert sam_target_trusted(None)
    assert sam_target_trusted({"accepted": False, "planes_dice_yf": 0.40, "planes_dice_teacher": 0.80})
    # an accepted round: trusted iff Y_f's Dice on the planes >= the teacher's (the guard's margin does not apply)
    assert sam_target_trusted({"accepted": True, "planes_dice_yf": 0.85, "planes_dice_teacher": 0.85})
    assert sam_target_trusted({"accepted": True, "planes_dice_yf": 0.91, "planes_dice_teacher": 0.85})
    assert not sam_target_trusted({"accepted": True, "planes_dice_yf": 0.826, "planes_dice_teacher": 0.848})
    # nothing to compare on (no planes): nothing says Y_f is worse
    assert sam_target_trusted({"accepted": True, "planes_dice_yf": float("nan"), "planes_dice_teacher": 0.8})


class _BoxFill:
    """A generalist that fills its box: Y_f is the boxes' MV, worse than a true teacher on the expert's planes."""

    def segment(self, slices, boxes, points=None):
        out = []
        for image, (x0, y0, x1, y1) in zip(slices, np.asarray(boxes, int)):
            m = np.zeros(np.shape(image), bool)
            m[y0:y1 + 1, x0:x1 + 1] = True
            out.append(m)
        return out


def test_expert_bounded_scans_keep_their_y_f_when_the_guard_rejects_the_teachers(trainer_inputs, phantom_nnunet,
                                                                                monkeypatch, tmp_path):
    """FMABS_EXPERT_BOUNDS_MM: the guard judges the teacher-prompted Y_f (a second, unbounded call on each labeled
    scan); its rejection sends the unlabeled scans to "unknown" unprompted and leaves the labeled scans' bounded
    Y_f."""
    from nnunet_fmabs.pseudolabels import labeler
    from nnunet_fmabs.pseudolabels.expert_bounds import ExpertExtent

    trainer = _trainer_with_a_true_teacher(trainer_inputs, phantom_nnunet, monkeypatch, FMABS_EXPERT_BOUNDS_MM="0",
                                           FMABS_BOX_GROWTH_MM="0", FMABS_LIMIT_TO_TEACHER_MM="off",
                                           nnUNet_results=str(tmp_path))
    trainer.campaign._generalist = _BoxFill()
    calls = []
    original = labeler.label_volume
    monkeypatch.setattr("nnunet_fmabs.campaign.pseudo_round.label_volume",
                        lambda *a, **k: calls.append(k.get("extent")) or original(*a, **k))
    summary = pseudo_label_round(trainer.campaign, 10, "test", trainer.teacher)
    labeled = trainer.pool.labeled_cases
    n_cases = len(trainer.campaign.pool.training_cases)
    # the labeled scans twice (bounded, then teacher-prompted for the guard), which reject the round: no other scan
    assert len(calls) == 2 * len(labeled) and sum(isinstance(c, ExpertExtent) for c in calls) == len(labeled)
    assert summary["unprompted_cases"] == n_cases - len(labeled) > 0
    assert summary["accepted"] is False and summary["planes_dice_teacher"] == 1.0
    assert 0 < summary["mean_dice_yf_bounded"] < 1
    for path in sorted(trainer.pl_store.latest_dir.glob("*.npz")):
        with np.load(path) as z:
            y = z["y"]
            if path.stem in labeled:  # trained on: the bounded Y_f with the expert's planes put back
                assert "y_generalist" not in z and (y == 1).sum() > 0 and not (y == trainer.ignore_value).any()
            else:
                assert (y == trainer.ignore_value).all()


def test_a_round_before_training_prompts_the_labeled_scans_from_the_expert_planes_alone(trainer_inputs,
                                                                                        phantom_nnunet, monkeypatch,
                                                                                        tmp_path):
    """FMABS_EXPERT_PROMPT_GROWTH_MM: at t = 0 (no teacher yet) the labeled scans get their Y_f from the expert's
    planes alone, the others "unknown" unprompted; the round is due once, and the teacher is never asked."""
    from nnunet_fmabs.campaign.pseudo_round import BEFORE_TRAINING

    trainer = _trainer_with_a_true_teacher(trainer_inputs, phantom_nnunet, monkeypatch, nnUNet_results=str(tmp_path))
    campaign = trainer.campaign
    assert campaign.pseudo_labels_due(0, True) is None  # the helper's runs have no planes-alone prompts
    campaign.settings = dataclasses.replace(campaign.settings, expert_prompt_growth_mm="0")
    assert campaign.pseudo_labels_due(0, False) == BEFORE_TRAINING  # labels answered at t = 0, no round yet
    campaign._generalist = _BoxFill()
    monkeypatch.setattr(campaign, "predict", lambda net, data: pytest.fail("the teacher prompted before training"))
    summary = pseudo_label_round(campaign, 0, BEFORE_TRAINING, trainer.teacher)
    labeled = trainer.pool.labeled_cases
    n_cases = len(campaign.pool.training_cases)
    assert summary["teacher_fingerprint"] == "none" and summary["unprompted_cases"] == n_cases - len(labeled) > 0
    assert summary["mean_dice_teacher"] == 0.0 and summary["mean_dice_yf"] > 0.3 and summary["prompted_slices"] > 0
    for path in sorted(trainer.pl_store.latest_dir.glob("*.npz")):
        with np.load(path) as z:
            y = z["y"]
            if path.stem in labeled:  # the planes' boxes filled, with the expert's planes put back
                assert (y == 1).sum() > 0 and not (y == trainer.ignore_value).any() and "planes" not in z
            else:
                assert (y == trainer.ignore_value).all()
    assert campaign.pseudo_labels_due(0, False) is None  # once
    assert campaign.pseudo_labels_due(1, False) is None  # no labels since, no scheduled round due yet
