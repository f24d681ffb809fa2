"""Every named trainer trains a tiny run (issue 14): nnU-Net's own ``run_training`` loop, in this process,
on the phantom with the cheap ``box_threshold`` generalist; each variant's switches show in what it did.

The runs cover every switch a variant sets: MT and UA-MT; the two ablations; the LC and HE samplers and UA
fusion (LC_UA, HE_UA); the baselines' label schedule (RAND_MV_t0). FMABSTrainer_HER_MV and SupCrossTrainer run
through the stock CLI (test_fmabs_cli.py); the other names are combinations of these switches (checked below).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nnunet_fmabs.trainers import variants

# t_max = 2: active rounds of 1 scan at t = 0 and 1 (budget 2); one pseudo-label round at t = 1
TINY_RUN = {"FMABS_EPOCHS": "2", "FMABS_ITERATIONS_PER_EPOCH": "1", "FMABS_BUDGET": "2", "FMABS_K": "1",
            "FMABS_PL_ROUNDS": "0.5", "FMABS_GENERALIST": "box_threshold"}


TRAINED = ["MeanTeacherTrainer", "UAMTTrainer", "FMABSTrainer_RAND_MV_noSAM", "FMABSTrainer_RAND_MV_noCons",
           "FMABSTrainer_LC_UA", "FMABSTrainer_HE_UA", "FMABSTrainer_RAND_MV_t0"]
THROUGH_THE_CLI = ["FMABSTrainer_HER_MV", "SupCrossTrainer"]
SWITCHES = ("active_rounds", "use_unlabeled_stream", "use_sam_loss", "use_consistency", "uncertainty_aware")


def test_every_variant_is_a_combination_of_trained_switches():
    """What a name sets (sampler, fusion, switches) each appears in a trained run."""
    trained = [getattr(variants, n) for n in TRAINED + THROUGH_THE_CLI]
    for name in variants.__all__:
        cls = getattr(variants, name)
        for attribute in ("sampler", "fusion", *SWITCHES):
            assert any(getattr(t, attribute) == getattr(cls, attribute) for t in trained), (name, attribute)


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_variant_trains_and_does_what_its_name_says(name, trainer_inputs, phantom_nnunet, plugin_path, monkeypatch):
    for k, v in {**phantom_nnunet["env"], **TINY_RUN}.items():
        if k.startswith("FMABS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(str(plugin_path))  # the box_threshold entry point
    plans, dataset_json = trainer_inputs
    plans["continue_training"] = False  # set by nnU-Net's run_training
    torch.manual_seed(0)
    cls = getattr(variants, name)
    trainer = cls(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    trainer.run_training()

    out = Path(trainer.output_folder)
    assert (out / "checkpoint_final.pth").is_file()
    logged = trainer.logger.local_logger.my_fantastic_logging
    assert len(logged["train_losses"]) == 2 and all(math.isfinite(x) for x in logged["train_losses"])
    pool = json.loads((out / "fmabs" / "pool" / "pool.json").read_text())
    samplers = [r["sampler"] for r in pool["rounds"]]
    if cls.active_rounds:  # one scan at t = 0, then the variant's sampler picks the next at t = 1
        assert [r["iteration"] for r in pool["rounds"]] == [0, 1]
        assert samplers == ["random", cls.sampler]
    else:  # the baselines' schedule: the whole budget at random at t = 0
        assert [r["iteration"] for r in pool["rounds"]] == [0] and samplers == ["random"]
    assert len(pool["cases"]) == 2
    rounds = list((out / "fmabs" / "pseudolabels").glob("round_*")) if (out / "fmabs" / "pseudolabels").exists() else []
    assert bool(rounds) == cls.use_sam_loss  # Y_f only where L_sup^SAM uses it
    assert (max(logged["loss_sam"]) > 0) == cls.use_sam_loss  # after the round at t = 1 (epoch 1)
    assert (max(logged["loss_cons"]) > 0) == cls.use_consistency
    assert trainer.uncertainty_aware == (name == "UAMTTrainer")
    assert trainer.fusion == getattr(cls, "fusion", trainer.fusion)
