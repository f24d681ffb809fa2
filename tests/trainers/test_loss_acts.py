"""The FM-ABS loss acts inside a real ``train_step`` (issue 14): Y_f moves the gradients, the switches
switch, the weights at t are eq. 3's, L_c moves the gradients, UA-MT's uncertainty mask is applied."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import DATASET


@pytest.fixture
def trainer(phantom_nnunet, monkeypatch, tmp_path):
    for k, v in phantom_nnunet["env"].items():
        if k.startswith(("FMABS_", "nnUNet_")):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    from nnunet_fmabs.trainers import FMABSTrainer_RAND_MV

    folder = Path(phantom_nnunet["env"]["nnUNet_preprocessed"]) / DATASET
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # set by nnU-Net's run_training
    dataset_json = json.loads((folder / "dataset.json").read_text())
    torch.manual_seed(0)
    trainer = FMABSTrainer_RAND_MV(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    return trainer


def _batch(trainer, y_f_value=None):
    """Two cross-labeled and two unlabeled patches; target channel 0: one expert plane (ignore elsewhere),
    channel 1: Y_f (a cube of foreground, or ``y_f_value`` everywhere)."""
    patch = tuple(trainer.configuration_manager.patch_size)
    b = 2 * trainer.batch_size
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.normal(size=(b, 1, *patch)).astype(np.float32))
    target = torch.full((b, 2, *patch), trainer.ignore_value, dtype=torch.int16)
    target[:trainer.batch_size, 0, patch[0] // 2] = 0
    target[:trainer.batch_size, 0, patch[0] // 2, 4:12, 4:12] = 1
    if y_f_value is None:
        target[:, 1] = 0
        target[:, 1, 4:12, 4:12, 4:12] = 1
    else:
        target[:, 1] = y_f_value
    return {"data": data, "target": target, "n_labeled": trainer.batch_size}


def _step(trainer, state, batch, t, **switches):
    """Gradients and logged terms of one train_step from ``state`` at iteration t."""
    trainer.network.load_state_dict(state["student"])
    trainer.teacher.load_state_dict(state["teacher"])
    for name, value in {"use_sam_loss": True, "use_consistency": True, "uncertainty_aware": False,
                        **switches}.items():
        setattr(trainer, name, value)
    trainer.iteration = t
    torch.manual_seed(1)  # the teacher's perturbations
    out = trainer.train_step(batch)
    grads = torch.cat([p.grad.flatten() for p in trainer.network.parameters() if p.grad is not None])
    return grads.clone(), out


def test_y_f_switches_and_weights_act_in_train_step(trainer):
    from nnunet_fmabs.schedules import lambda_c, lambda_sam

    state = {"student": {k: v.clone() for k, v in trainer.network.state_dict().items()},
             "teacher": {k: v.clone() for k, v in trainer.teacher.state_dict().items()}}
    t = trainer.t_max // 2
    trainer.settings = dataclasses.replace(trainer.settings, lambda_sam_schedule="paper")  # eq. 3 (default: guarded)
    # eq. 3 by hand at t = t_max / 2: exp(-5 / 4)
    assert lambda_sam(t, trainer.t_max) == pytest.approx(0.5 * (1 - math.exp(-1.25)))
    assert lambda_c(t, trainer.t_max) == pytest.approx(0.1 * math.exp(-1.25))
    full, out = _step(trainer, state, _batch(trainer), t)
    assert out["lambda_sam"] == pytest.approx(0.5 * (1 - math.exp(-1.25)))
    assert out["lambda_c"] == pytest.approx(0.1 * math.exp(-1.25))
    assert out["loss_sam"] > 0 and out["loss_cons"] > 0
    assert out["loss"] == pytest.approx(out["loss_cross"] + out["lambda_sam"] * out["loss_sam"]
                                        + out["lambda_c"] * out["loss_cons"], rel=1e-5)
    again, _ = _step(trainer, state, _batch(trainer), t)
    assert torch.equal(full, again)  # the comparison below is not noise

    no_sam, out_no_sam = _step(trainer, state, _batch(trainer), t, use_sam_loss=False)
    assert out_no_sam["lambda_sam"] == 0.0 and "loss_sam" not in out_no_sam
    assert not torch.allclose(full, no_sam)
    # Y_f itself moves the gradients: another pseudo label, another step
    other_y_f, _ = _step(trainer, state, _batch(trainer, y_f_value=1), t)
    assert not torch.allclose(full, other_y_f)
    # no pseudo label yet (ignore everywhere): the SAM term is absent, as with the switch off
    unlabeled, out_unlabeled = _step(trainer, state, _batch(trainer, y_f_value=trainer.ignore_value), t)
    assert "loss_sam" not in out_unlabeled and torch.allclose(unlabeled, no_sam)
    # L_c moves the gradients (a little, at lambda_c 0.03 and a teacher equal to the student: any change
    # of a deterministic step shows that L_c is in the graph)
    no_cons, out_no_cons = _step(trainer, state, _batch(trainer), t, use_consistency=False)
    assert out_no_cons["lambda_c"] == 0.0 and not torch.equal(full, no_cons)
    # UA-MT: the uncertainty mask changes L_c (at the start of training its threshold is 0.75 ln 2)
    ua, out_ua = _step(trainer, state, _batch(trainer), 0, uncertainty_aware=True)
    plain, out_plain = _step(trainer, state, _batch(trainer), 0)
    assert out_ua["loss_cons"] != pytest.approx(out_plain["loss_cons"])
    # FMABS_LAMBDA_SAM_SCHEDULE=constant: at t_max eq. 3 gives lambda_sam 0 (Y_f no longer trains), constant 0.5
    end_paper, out_end_paper = _step(trainer, state, _batch(trainer), trainer.t_max)
    assert out_end_paper["lambda_sam"] == 0.0
    trainer.settings = dataclasses.replace(trainer.settings, lambda_sam_schedule="constant")
    end_constant, out_end = _step(trainer, state, _batch(trainer), trainer.t_max)
    assert out_end["lambda_sam"] == 0.5 and out_end["lambda_c"] == pytest.approx(0.1)
    assert out_end["loss"] == pytest.approx(out_end["loss_cross"] + 0.5 * out_end["loss_sam"]
                                            + 0.1 * out_end["loss_cons"], rel=1e-5)
    assert not torch.allclose(end_paper, end_constant)
    # guarded: the constant step while the latest round's target is trusted, eq. 3's step when it is not
    trainer.settings = dataclasses.replace(trainer.settings, lambda_sam_schedule="guarded")
    for trusted, expected, weight in ((True, end_constant, 0.5), (False, end_paper, 0.0)):
        trainer._sam_target_trusted = trusted
        end_guarded, out_guarded = _step(trainer, state, _batch(trainer), trainer.t_max)
        assert out_guarded["lambda_sam"] == weight and torch.allclose(end_guarded, expected)


def test_teacher_passes_are_one_batched_call_equal_to_separate_passes(trainer, monkeypatch):
    """The J perturbed teacher passes run as one call on J copies of the batch; each chunk is what a
    separate pass on its own perturbation gives (instance norm: the samples do not mix)."""
    from nnunet_fmabs import losses

    # a perturbation that marks each sample of the stacked batch by its index
    def tagged(x):
        return x + 0.1 * torch.arange(x.shape[0], dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))

    monkeypatch.setattr(losses, "perturb", tagged)
    calls = []
    handle = trainer.teacher.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    data = _batch(trainer)["data"]
    b = data.shape[0]
    passes = trainer._teacher_passes(data, 3)
    handle.remove()
    assert calls == [3 * b] and len(passes) == 3
    with torch.no_grad():
        for j, got in enumerate(passes):
            shift = 0.1 * torch.arange(j * b, (j + 1) * b, dtype=data.dtype).view(-1, 1, 1, 1, 1)
            expected = torch.softmax(trainer.teacher(data + shift), 1)
            assert got.dtype == torch.float32 and got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_mixed_precision_follows_the_device(trainer, monkeypatch):
    """fp32 on CPU (no autocast, no loss scaling); on CUDA bf16 where supported, else fp16 with the
    GradScaler, as nnU-Net's own train_step."""
    assert trainer.amp_dtype is None and not trainer._scaled_gradients
    with trainer._autocast():
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(trainer, "device", torch.device("cuda"))
    monkeypatch.setattr(trainer, "grad_scaler", object())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer._scaled_gradients
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert trainer.amp_dtype == torch.float16 and trainer._scaled_gradients


def test_pretrained_weights_reach_the_teacher(trainer, tmp_path):
    """nnU-Net's -pretrained_weights loads into the student after initialize(): the teacher must start
    from those weights, not from the random initialisation."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    random_init = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    other = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
             for k, v in trainer.network.state_dict().items()}
    torch.save({"network_weights": other}, tmp_path / "pretrained.pth")
    load_pretrained_weights(trainer.network, str(tmp_path / "pretrained.pth"))
    try:
        trainer.on_train_start()
        student = trainer.network.state_dict()
        teacher = trainer.teacher.state_dict()
        assert all(torch.equal(teacher[k], student[k]) for k in student)
        changed = [k for k in other if ".seg_layers." not in k and other[k].is_floating_point()]
        assert changed and all(not torch.equal(teacher[k], random_init[k]) for k in changed)
    finally:
        trainer._finish_streams()


def test_checkpoint_holds_nnunets_own_keys_and_ours(trainer, monkeypatch, tmp_path):
    """Our atomic checkpoint writes exactly nnU-Net's keys (read back by its load_checkpoint and predictor)
    plus one "fmabs" entry: teacher, settings, trainer, failed-round counter, random streams."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    written, real_save = [], torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: written.append(obj))
    nnUNetTrainer.save_checkpoint(trainer, "unused.pth")  # nnU-Net's own method on our trainer
    ours = trainer._checkpoint_dict()
    assert set(ours) - {"fmabs"} == set(written[0])
    assert set(ours["fmabs"]) == {"teacher", "settings", "trainer", "pl_failures", "rng"}
    trainer._pl_failures = 2
    checkpoint = trainer._checkpoint_dict()
    assert checkpoint["fmabs"]["pl_failures"] == 2
    real_save(checkpoint, tmp_path / "checkpoint.pth")
    trainer._pl_failures = 0
    trainer.load_checkpoint(str(tmp_path / "checkpoint.pth"))  # the failed-round counter survives a resume
    assert trainer._pl_failures == 2


def test_guarded_schedule_follows_the_latest_committed_round(trainer, monkeypatch):
    """FMABS_LAMBDA_SAM_SCHEDULE=guarded: at each epoch start the trainer reads the latest round's verdict
    (nnunet_fmabs.pseudolabels.quality.sam_target_trusted) and logs when the weight's rule changes."""
    from types import SimpleNamespace

    from nnunet_fmabs.trainers import fmabs_trainer

    store = SimpleNamespace(rounds=[])
    monkeypatch.setattr(trainer, "campaign", SimpleNamespace(pl_store=store))
    monkeypatch.setattr(fmabs_trainer, "run_due_distributed", lambda *a: False)
    logged = []
    monkeypatch.setattr(trainer, "print_to_log_file", lambda *a, **k: logged.append(" ".join(map(str, a))))
    trainer.settings = dataclasses.replace(trainer.settings, lambda_sam_schedule="guarded")
    trainer._run_due_events()
    assert trainer._sam_target_trusted and not logged  # no round yet: held, nothing changed
    store.rounds.append({"accepted": True, "planes_dice_yf": 0.826, "planes_dice_teacher": 0.848})
    trainer._run_due_events()
    assert not trainer._sam_target_trusted and "eq. 3's decay" in logged[-1]
    store.rounds.append({"accepted": False, "planes_dice_yf": 0.6, "planes_dice_teacher": 0.8})
    trainer._run_due_events()
    assert trainer._sam_target_trusted and "held at 0.5" in logged[-1]
