"""The campaign without nnU-Net: a fake case source (tiny synthetic scans), a fake predictor and a cheap
box-threshold generalist. Every round kind, the plan, kills at each point with a resume, the leak rule."""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from nnunet_fmabs.annotation.experts import SimulatedExpert
from nnunet_fmabs.campaign import Campaign, CampaignPlan, CaseSource, RunFolderTaken, resume_command
from nnunet_fmabs.campaign import campaign as campaign_module
from nnunet_fmabs.campaign import pseudo_round as pseudo_round_module
from nnunet_fmabs.campaign.pseudo_round import BEFORE_TRAINING
from nnunet_fmabs.demo import DemoBoxGeneralist
from nnunet_fmabs.runstate import run_state
from nnunet_fmabs.settings import RunSettings, SettingsMismatchError

SHAPE = (12, 16, 16)
TRAINING = [f"scan_{i}" for i in range(8)]
VALIDATION = ["val_0", "val_1"]
# margin 0: the box stand-in's rounds pass the guard, so a single process and two ranks (test_distributed) write the
# same files (a rank cannot reject a round early: its scans carry the generalist's Y_f beside the fallback)
SETTINGS = RunSettings(budget="5", k=2, warmup_fraction=0.2, al_spread=0.5, pl_rounds="0.6", seed=3,
                       expert="simulated", embedding_cache="off", expert_prompt_growth_mm="10", pl_guard_margin=0.0)


def _scan(case: str):
    """A bright box of case-dependent size and place in noise; seg = the box."""
    rng = np.random.default_rng(sum(map(ord, case)))
    seg = np.zeros(SHAPE, np.int16)
    z, y, x = rng.integers(2, 5), rng.integers(2, 6), rng.integers(2, 6)
    seg[z:z + 5 + rng.integers(0, 3), y:y + 6 + rng.integers(0, 4), x:x + 6 + rng.integers(0, 4)] = 1
    data = seg + rng.normal(0, 0.3, SHAPE)
    return data[None].astype(np.float32), seg[None], None, {"spacing": [1.0, 1.0, 1.0]}


class Recorder:
    """The fake source's dense-label reads, by case (the leak rule: only queried scans)."""

    def __init__(self):
        self.dense: list[str] = []


def make_source(recorder: Recorder | None = None) -> CaseSource:
    scans = {c: _scan(c) for c in TRAINING + VALIDATION}
    source = CaseSource(load_case=lambda c: scans[c], training_cases=TRAINING, validation_cases=VALIDATION,
                        spacing=[1.0, 1.0, 1.0], ignore_value=2, max_label=1,
                        label_names={"background": 0, "box": 1})
    if recorder is not None:
        dense = source.dense_label
        source.dense_label = lambda c: recorder.dense.append(c) or dense(c)  # type: ignore[method-assign]
    return source


class Net(torch.nn.Module):
    """A stand-in network: foreground probability from the intensity, sharper for a better network."""

    def __init__(self, sharpness: float = 4.0):
        super().__init__()
        self.register_buffer("sharpness", torch.tensor(float(sharpness)))


def predict(net: Net, data) -> np.ndarray:
    fg = 1 / (1 + np.exp(-float(net.sharpness) * (np.asarray(data[0]) - 0.5)))
    return np.stack([1 - fg, fg]).astype(np.float32)


def open_campaign(folder, sampler="HER", source=None, settings=SETTINGS, generalist=None, **kw) -> Campaign:
    logs: list[str] = kw.pop("logs", [])
    saves: list[int] = kw.pop("saves", [])
    return Campaign.open(folder, settings, source or make_source(), active_rounds=True, use_sam_loss=True,
                         iterations_per_epoch=10, epochs=10, expert=SimulatedExpert(), predict=predict,
                         generalist_factory=lambda: generalist or DemoBoxGeneralist(), sampler=sampler, fusion="MV",
                         log=logs.append, save=lambda: saves.append(1), **kw)


def test_plan_by_hand():
    # budget 5, K 2, warm-up 20 %: rounds of 1, 2, 2 scans at 0, 25, 50 of t_max 100 -> epoch starts 0, 30, 50;
    # pseudo-label rounds at 0.1..0.8 of t_max, at epoch starts
    plan = CampaignPlan.make(SETTINGS, 5, prelabeled=0, active_rounds=True, use_sam_loss=True,
                             iterations_per_epoch=10, epochs=10)
    assert plan.rounds == [(1, 0), (2, 30), (2, 50)] and plan.pseudo_label_rounds == [60]
    paper = RunSettings(budget="5")
    assert CampaignPlan.make(paper, 5, prelabeled=0, active_rounds=True, use_sam_loss=True, iterations_per_epoch=8,
                             epochs=10).pseudo_label_rounds == [8, 16, 24, 32, 40, 48, 56, 64]
    assert CampaignPlan.make(SETTINGS, 5, prelabeled=0, active_rounds=False, use_sam_loss=False,
                             iterations_per_epoch=10, epochs=10) == CampaignPlan([(5, 0)], [])
    # a barely labeled dataset: its 3 labeled scans are round 0, then K per round
    assert [s for s, _ in CampaignPlan.make(SETTINGS, 8, prelabeled=3, active_rounds=True, use_sam_loss=True,
                                            iterations_per_epoch=10, epochs=10).rounds] == [3, 2, 2, 1]


def test_every_round_kind_in_order(tmp_path):
    recorder = Recorder()
    logs, saves = [], []
    c = open_campaign(tmp_path, source=make_source(recorder), logs=logs, saves=saves)
    assert "rounds [1, 2, 2] at iterations [0, 30, 50]" in c.describe()

    # t = 0: round 0, random, answered by the simulated expert; its scan's Y_f from the expert's planes alone (no
    # teacher yet: the other scans are not prompted)
    assert c.run_due(0, Net(), Net()) is True
    assert len(c.pool.labeled_cases) == 1 and c.pool.rounds[0]["sampler"] == "random"
    (pl0,) = c.pl_store.rounds
    assert (pl0["iteration"], pl0["reason"], pl0["teacher_fingerprint"]) == (0, BEFORE_TRAINING, "none")
    assert pl0["unprompted_cases"] == len(TRAINING) - 1 and len(saves) == 1
    assert c.run_due(0, Net(), Net()) is False and c.run_due(10, Net(), Net()) is False  # nothing due

    # t = 30: round 1 with HER: the two highest scores (recorded in pool.json) are queried, then Y_f
    assert c.run_due(30, Net(), Net()) is True
    r1 = json.loads((tmp_path / "pool" / "pool.json").read_text())["rounds"][1]
    scores = r1["scores"]
    assert sorted(scores) == sorted(set(TRAINING) - set(c.pool.rounds[0]["cases"]))
    assert sorted(r1["cases"]) == sorted(sorted(scores, key=scores.get)[-2:])
    assert r1["sampler"] == "HER" and len(c.pool.labeled_cases) == 3
    pl = c.pl_store.rounds[-1]
    assert len(c.pl_store.rounds) == 2 and pl["iteration"] == 30 and pl["reason"] == "after an active round" and pl["accepted"] in (True, False)
    assert sorted(p.stem for p in c.pl_store.latest_dir.glob("*.npz")) == sorted(TRAINING)
    assert (tmp_path / "active_learning_curve.csv").is_file()  # the student's Dice before the round

    # t = 50: round 2 (the budget is then spent) and its pseudo labels; t = 60: the scheduled round
    c.run_due(50, Net(), Net())
    assert len(c.pool.labeled_cases) == 5 and c.pool.remaining_budget == 0
    c.run_due(60, Net(), Net())
    assert [r["iteration"] for r in c.pl_store.rounds] == [0, 30, 50, 60]
    assert c.pl_store.rounds[-1]["reason"] == "schedule"
    assert c.run_due(70, Net(), Net()) is False

    # Y_f carries the expert's planes on the labeled scans; simulation measures it for the log only
    for case in c.pool.labeled_cases:
        with np.load(c.pl_store.latest_dir / f"{case}.npz") as z:
            ann = c.pool.annotation(case)
            for a in range(3):
                np.testing.assert_array_equal(np.take(z["y"], ann.slices[a], axis=a), ann.planes[a])
    assert "mean_dice_yf" in c.pl_store.rounds[-1]
    metrics = c.run_metrics()
    assert metrics["fmabs_labeled_scans"] == 5.0 and metrics["fmabs_pl_rounds"] == 4.0
    # the leak rule: the expert read the dense truth of the queried scans only (to pick and to answer)
    assert set(recorder.dense) == set(c.pool.labeled_cases)
    assert any("active round 1: queried" in m for m in logs)


def test_runs_with_one_seed_share_their_random_scans(tmp_path):
    """Common random numbers: Sup cross's budget at t = 0 (one random round of 5), FM-ABS's random round 0
    (1 scan) and the RAND sampler's later rounds all take the next scans of one seeded order of the pool."""
    sup = Campaign.open(tmp_path / "sup", SETTINGS, make_source(), active_rounds=False, use_sam_loss=False,
                        iterations_per_epoch=10, epochs=10, expert=SimulatedExpert(), predict=predict,
                        generalist_factory=DemoBoxGeneralist, sampler="random", fusion="MV", log=print,
                        save=lambda: None)
    sup.run_due(0, Net(), Net())
    order = sup.pool.rounds[0]["cases"]
    assert len(order) == 5 and order != sorted(order)  # the draw's own order is kept
    her = open_campaign(tmp_path / "her")
    her.run_due(0, Net(), Net())
    assert her.pool.labeled_cases == order[:1]
    rand = open_campaign(tmp_path / "rand", sampler="random", generalist=DemoBoxGeneralist())
    for t in (0, 30, 50):
        rand.run_due(t, Net(), Net())
    assert [c for r in rand.pool.rounds for c in r["cases"]] == order


def uninterrupted_state(folder) -> dict:
    """run_state of a run never killed, through the steps of the kill tests (0, 30, 50, 60)."""
    for t in (0, 30, 50, 60):
        open_campaign(folder / "fmabs").run_due(t, Net(), Net())
    return run_state(folder)


@pytest.fixture(scope="module")
def clean_state(tmp_path_factory) -> dict:
    return uninterrupted_state(tmp_path_factory.mktemp("clean"))


@pytest.mark.parametrize("point", ["after_query", "after_answer", "pseudo_label_case",
                                   "before_pseudo_label_commit"])
def test_a_kill_at_each_point_resumes_to_the_same_state(tmp_path, monkeypatch, point, clean_state):
    def run(folder, kill=None):
        class Killed(BaseException):
            pass

        seen = {"n": 0}

        def maybe_kill(name):
            if name == kill:
                seen["n"] += 1
                if seen["n"] == 2:  # the second time: inside round 1 (pseudo-label points: mid-round)
                    raise Killed(name)

        monkeypatch.setattr(campaign_module, "kill_point", maybe_kill)
        monkeypatch.setattr(pseudo_round_module, "kill_point", maybe_kill)
        killed = False
        for t in (0, 30, 50, 60):
            while True:
                try:
                    open_campaign(folder / "fmabs").run_due(t, Net(), Net())  # a fresh process each time
                    break
                except Killed:
                    killed = True
        return killed

    assert run(tmp_path / "killed", kill=point)
    assert run_state(tmp_path / "killed") == clean_state


def test_failed_pseudo_label_rounds_are_logged_then_stop_the_run(tmp_path):
    class Broken:
        def segment(self, slices, boxes, points=None):
            raise OSError("GPU fell off the bus")

    logs = []
    c = open_campaign(tmp_path, generalist=Broken(), logs=logs)
    c.run_due(0, Net(), Net())  # round 0 lands; the round before training fails
    assert c.pl_failures == 1 and len(c.pool.labeled_cases) == 1 and c.pl_store.rounds == []
    assert any("FAILED (OSError: GPU fell off the bus)" in m and "retried" in m for m in logs)
    c.run_due(30, Net(), Net())  # the active round lands; its pseudo-label round fails
    assert c.pl_failures == 2 and len(c.pool.labeled_cases) == 3 and c.pl_store.rounds == []
    with pytest.raises(RuntimeError, match="3 pseudo-label rounds failed in a row"):
        c.run_due(40, Net(), Net())


def test_the_run_folder_is_claimed(tmp_path):
    claim = Campaign.claim_folder
    claim(tmp_path, SETTINGS, "FMABSTrainer_HER_MV", resuming=False, checkpoint_exists=False, where="here")
    stored = json.loads((tmp_path / "settings.json").read_text())
    assert stored["trainer"] == "FMABSTrainer_HER_MV" and stored["budget"] == "5"
    # killed before its first checkpoint: started again without --c, the pool is reused, nothing lost
    claim(tmp_path, SETTINGS, "FMABSTrainer_HER_MV", resuming=False, checkpoint_exists=False, where="here")
    claim(tmp_path, SETTINGS, "FMABSTrainer_HER_MV", resuming=True, checkpoint_exists=True, where="here")
    with pytest.raises(RunFolderTaken, match="here already holds an FM-ABS run .* Continue it with `--c`"):
        claim(tmp_path, SETTINGS, "FMABSTrainer_HER_MV", resuming=False, checkpoint_exists=True, where="here")
    with pytest.raises(RunFolderTaken, match="belongs to trainer FMABSTrainer_HER_MV, not MeanTeacherTrainer"):
        claim(tmp_path, SETTINGS, "MeanTeacherTrainer", resuming=True, checkpoint_exists=True, where="here")
    message = ("Refusing to continue the run in here with other FMABS_* settings than it was started with:\n"
               "  FMABS_BUDGET: run has '5', now '6'\n"
               "Set the variables back to the run's values (or unset them), or start a new run.")
    with pytest.raises(SettingsMismatchError, match=f"^{re.escape(message)}$"):
        claim(tmp_path, dataclasses.replace(SETTINGS, budget="6"), "FMABSTrainer_HER_MV", resuming=True,
              checkpoint_exists=True, where="here")


def test_resume_command_repeats_the_users_line():
    argv = ["/venv/bin/nnUNetv2_train", "42", "3d_fullres", "0", "-tr", "FMABSTrainer_HER_MV", "--c"]
    assert resume_command("fallback", argv) == "nnUNetv2_train 42 3d_fullres 0 -tr FMABSTrainer_HER_MV --c"
    assert resume_command("fallback", ["python", "-c", "..."]) == "fallback"


class NotesExpert:
    """A third-party expert (an entry point of nnunet_fmabs.experts): the teacher's labels... here, the truth."""

    name = "notes"

    def __init__(self, queries_root):
        self.queries_root = queries_root

    @classmethod
    def for_run(cls, context):
        return cls(context.queries_root)


def test_experts_come_from_one_registry(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    from nnunet_fmabs.annotation.experts import EXPERTS
    from nnunet_fmabs.annotation.human import HumanExpert
    from nnunet_fmabs.campaign import make_expert

    def expert(kind, barely_labeled=False):
        return make_expert(RunSettings(expert=kind), barely_labeled, tmp_path / "q", "resume", ".nii.gz")

    assert isinstance(expert("auto"), SimulatedExpert) and isinstance(expert("auto", True), HumanExpert)
    assert expert("human").resume_command == "resume" and expert("Simulated").rule == "bbox_middle"
    with pytest.raises(ValueError, match="FMABS_EXPERT=simulated needs dense labels"):
        expert("simulated", True)
    monkeypatch.setattr("nnunet_fmabs.registry.group_entry_points", lambda group: [
        EntryPoint("notes", f"{__name__}:NotesExpert", group)] if group == "nnunet_fmabs.experts" else [])
    monkeypatch.setattr(EXPERTS, "_classes", dict(EXPERTS._classes))
    with pytest.raises(ValueError, match="unknown expert 'oracle'; known: simulated, human, notes"):
        expert("oracle")
    assert expert("notes").queries_root == tmp_path / "q"


def test_building_the_generalist_leaves_the_trainings_random_stream_alone(tmp_path):
    """A generalist draws its initial weights from torch's global generator before its checkpoint replaces
    them; the training's later augmentations and perturbations must not shift with it (FMABS_PL_SOURCE
    ablations, which build no generalist, stay paired with the generalist's runs)."""

    class DrawsAtInit(DemoBoxGeneralist):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.Linear(8, 8)  # torch's default init: draws from the global generator

    built = []
    c = open_campaign(tmp_path, generalist=None)
    c._generalist_factory = lambda: built.append(1) or DrawsAtInit()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    generalist = c.generalist()
    assert isinstance(generalist, DrawsAtInit) and c.generalist() is generalist and built == [1]
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)
    # without the fork the same build would have moved the stream
    torch.manual_seed(5)
    DrawsAtInit()
    assert not torch.equal(torch.rand(3), expected)
