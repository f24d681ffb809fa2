"""The FM-ABS campaign of one run: who labels what and when (2.2, 2.3), apart from the SGD loop.

A :class:`Campaign` holds the labeled pool, the pseudo-label store, the expert, the plan of rounds and
the run's settings, and reads scans through a :class:`~nnunet_fmabs.campaign.source.CaseSource`. The
trainer calls :meth:`Campaign.run_due` at each epoch start with its student and teacher; everything a
round decides is on disk (atomically) before it returns, so a run killed anywhere resumes with ``--c``.
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from nnunet_fmabs import atomic
from nnunet_fmabs.annotation.experts import EXPERTS, ExpertContext, SimulatedExpert
from nnunet_fmabs.annotation.pool import LabeledPool
from nnunet_fmabs.annotation.rounds import budget_from_spec
from nnunet_fmabs.campaign.plan import CampaignPlan
from nnunet_fmabs.campaign.pseudo_round import BEFORE_TRAINING, pseudo_label_round
from nnunet_fmabs.campaign.source import CaseSource
from nnunet_fmabs.faults import kill_point
from nnunet_fmabs.progress import progress
from nnunet_fmabs.pseudolabels.labeler import dice
from nnunet_fmabs.pseudolabels.store import PseudoLabelStore
from nnunet_fmabs.samplers import get_sampler, random_order, select_cases
from nnunet_fmabs.settings import RunSettings

EXIT_AWAITING_EXPERT = 3  # exit status while a person labels the queried slices
MAX_FAILED_PSEUDO_LABEL_ROUNDS = 3


class AwaitingExpert(SystemExit):
    """Raised (an exit, not a crash) when a round waits for a person's labels."""

    def __init__(self, message: str):
        print(message, file=sys.stderr, flush=True)
        super().__init__(EXIT_AWAITING_EXPERT)


class RunFolderTaken(RuntimeError):
    """The output folder holds another run, or this run without ``--c``."""


def make_expert(settings: RunSettings, barely_labeled: bool, queries_root: Path, resume_command: str,
                file_ending: str, log: Callable[[str], None] = print):
    """FMABS_EXPERT: simulated (reads the dense truth), human (files for a person), auto (human when the
    dataset is barely labeled, i.e. declares an ignore label), or a plugin's name (EXPERTS)."""
    import nnunet_fmabs.annotation.human  # noqa: F401 - registers "human"

    kind = settings.expert
    if kind == "auto":
        kind = "human" if barely_labeled else "simulated"
    cls = EXPERTS.get(kind)
    if barely_labeled and cls is SimulatedExpert:
        raise ValueError("FMABS_EXPERT=simulated needs dense labels, but this dataset declares an "
                         "ignore label (it is barely labeled): use FMABS_EXPERT=human")
    return cls.for_run(ExpertContext(settings, Path(queries_root), resume_command, file_ending, log))


class Campaign:
    """Pool, pseudo labels, expert and plan of one run; see the module docstring."""

    def __init__(self, folder: Path, settings: RunSettings, source: CaseSource, pool: LabeledPool,
                 plan: CampaignPlan, expert, *, predict: Callable, generalist_factory: Callable[[], object],
                 sampler: str = "random", fusion: str = "MV", use_sam_loss: bool = True, t_max: int,
                 log: Callable[[str], None] = print, save: Callable[[], None] = lambda: None):
        self.folder, self.settings, self.source, self.pool, self.plan = Path(folder), settings, source, pool, plan
        self.expert, self.predict, self._generalist_factory = expert, predict, generalist_factory
        self.sampler, self.fusion, self.use_sam_loss, self.t_max = sampler, fusion, use_sam_loss, t_max
        self.log, self.save = log, save
        self.pl_store = PseudoLabelStore(self.folder / "pseudolabels")
        self.pl_failures = 0
        self._generalist = None
        self._student = None

    # -- opening a run ----------------------------------------------------------------------------
    @staticmethod
    def claim_folder(folder: Path, settings: RunSettings, trainer_name: str, *, resuming: bool,
                     checkpoint_exists: bool, where: str) -> None:
        """Write the run's settings on a fresh folder; on an existing one check that it is this run, with
        these settings, continued (``--c`` loaded a checkpoint) or not yet checkpointed: labels that cost an
        expert's time are never overwritten by a new run."""
        settings_file = folder / "settings.json"
        if not settings_file.is_file():
            atomic.write_json(settings_file, {**settings.to_dict(), "trainer": trainer_name})
            return
        stored = RunSettings.load_dict(settings_file)
        if stored.get("trainer", trainer_name) != trainer_name:
            raise RunFolderTaken(f"{folder} belongs to trainer {stored.get('trainer')}, not {trainer_name}")
        settings.check_same(stored, where)
        if not resuming and checkpoint_exists:
            raise RunFolderTaken(
                f"{where} already holds an FM-ABS run (labels in {folder / 'pool' / 'pool.json'}). "
                "Continue it with `--c`, or move the folder away to start a new run: "
                "labels that cost an expert's time are never overwritten.")

    @classmethod
    def open(cls, folder: Path, settings: RunSettings, source: CaseSource, *, active_rounds: bool,
             use_sam_loss: bool, iterations_per_epoch: int, epochs: int, expert, **kwargs) -> "Campaign":
        """The run's pool (created or reopened), its plan and its pseudo-label store."""
        tr_keys = list(source.training_cases)
        budget = budget_from_spec(settings.budget, len(tr_keys))
        prelabeled = source.scans_labeled_by_the_dataset(tr_keys)
        budget = max(budget, len(prelabeled))
        pool = LabeledPool.open(Path(folder) / "pool", budget, tr_keys)
        if prelabeled and not pool.rounds:
            pool.add_dataset_labels(prelabeled)
        plan = CampaignPlan.make(settings, budget, prelabeled=len(prelabeled), active_rounds=active_rounds,
                                 use_sam_loss=use_sam_loss, iterations_per_epoch=iterations_per_epoch, epochs=epochs)
        return cls(folder, settings, source, pool, plan, expert, use_sam_loss=use_sam_loss,
                   t_max=iterations_per_epoch * epochs, **kwargs)

    def describe(self) -> str:
        p = self.pool
        return (f"FM-ABS: budget {p.budget} scans ({3 * p.budget} slices) of {len(p.training_cases)}, rounds "
                f"{[s for s, _ in self.plan.rounds]} at iterations {[t for _, t in self.plan.rounds]}, "
                f"sampler {self.sampler}, fusion {self.fusion}, expert {self.expert.name}, t_max {self.t_max}, "
                f"pseudo-label rounds at {self.plan.pseudo_label_rounds}")

    # -- what is due ------------------------------------------------------------------------------
    def run_due(self, t: int, student, teacher) -> bool:
        """Run every round due at iteration ``t``; True when the training batches must be rebuilt."""
        labels_added = self.run_rounds(t, student)
        reason = self.pseudo_labels_due(t, labels_added)
        if reason is not None:
            self.guarded(t, lambda: pseudo_label_round(self, t, reason, teacher))
        if labels_added or reason is not None:
            self.save()
        return labels_added or reason is not None

    def run_rounds(self, t: int, student) -> bool:
        """The pending round's answer and every active round due at ``t``; True when labels were added."""
        self._student = student
        labels_added = False
        if self.pool.pending_round is not None:
            self.answer_pending(t)
            labels_added = True
        while True:
            done = len([r for r in self.pool.rounds if r["status"] == "answered"])
            rounds = self.plan.rounds
            if done >= len(rounds) or self.pool.remaining_budget <= 0 or rounds[done][1] > t:
                break
            if t > 0:  # the Dice the student reached with the labels it had so far
                self.active_learning_curve(t, student)
            self.active_round(done, t, student)
            labels_added = True
        return labels_added

    def pseudo_labels_due(self, t: int, labels_added: bool) -> str | None:
        """Why a pseudo-label round is due at ``t`` ("after an active round", "schedule", or at t = 0
        :data:`~nnunet_fmabs.campaign.pseudo_round.BEFORE_TRAINING`), or None."""
        if not self.use_sam_loss:
            return None
        if t <= 0:  # no teacher yet: only a recipe whose labeled scans the expert's planes prompt alone has a round
            planes_alone = self.settings.pl_source == "generalist" and \
                self.settings.recipe().expert_prompt_growth_mm is not None
            cross = any(info["file"] for info in self.pool.state["cases"].values())
            return BEFORE_TRAINING if planes_alone and cross and self.pl_store.last_iteration is None else None
        last = self.pl_store.last_iteration
        last = -1 if last is None else last
        # labels that no pseudo-label round has seen yet: those of this call, or of a round answered before a
        # kill or a failed pseudo-label round (rounds at t = 0 have no teacher to prompt the generalist)
        if labels_added or any(r["status"] == "answered" and (r.get("iteration") or 0) > max(last, 0)
                               for r in self.pool.rounds):
            return "after an active round"
        if any(last < s <= t for s in self.plan.pseudo_label_rounds):
            return "schedule"
        return None

    def guarded(self, t: int, round_: Callable[[], object]) -> bool:
        """Run a pseudo-label round; a failure keeps the last Y_f and is retried at the next epoch, three in
        a row stop the run. True when the round succeeded."""
        try:
            round_()
        except Exception as e:  # the generalist raised, the disk is full, ...: keep the last Y_f
            self.log(f"pseudo-label round at iteration {t} FAILED ({type(e).__name__}: {e}); training goes on with "
                     f"the previous pseudo labels ({self.pl_store.latest_dir or 'none yet'}); the round is retried "
                     f"at the next epoch (one before training: with the next round that has a teacher)."
                     f"\n{traceback.format_exc()}")
            self.pl_failures += 1
            if self.pl_failures >= MAX_FAILED_PSEUDO_LABEL_ROUNDS:
                raise RuntimeError(f"{self.pl_failures} pseudo-label rounds failed in a row; see the log above") from e
            return False
        self.pl_failures = 0
        return True

    def reload(self) -> None:
        """Read the pool and the pseudo-label state again (another process, rank 0, wrote them)."""
        self.pool = LabeledPool.open(self.pool.folder, self.pool.budget, self.pool.training_cases)
        self.pl_store = PseudoLabelStore(self.folder / "pseudolabels")

    # -- active rounds (2.3) ----------------------------------------------------------------------
    def active_round(self, r: int, t: int, student) -> dict:
        """Score the unlabeled scans with the round's sampler (random in round 0), query the best ones."""
        size = min(self.plan.rounds[r][0], self.pool.remaining_budget)
        candidates = self.pool.unlabeled_cases
        sampler = get_sampler(self.sampler if r > 0 else "random")
        scores: dict[str, float] | None = None
        if getattr(sampler, "is_random", False):
            chosen = self.next_random_cases(candidates, size)
        else:
            scores = {}
            for case in progress(candidates, f"round {r}: scoring with {sampler.name}", self.log):
                probs = (self.predict(student, self.source.load_case(case)[0])
                         if getattr(sampler, "needs_probabilities", True) else None)
                scores[case] = float(sampler.score(probs, t=t, t_max=self.t_max))
            rng = np.random.default_rng([self.settings.seed, r])
            chosen = [str(c) for c in select_cases(sampler, scores, size, rng)]
        self._student = student
        access = self._access()
        slices = {c: self.expert.propose_slices(c, access) for c in chosen}
        entry = self.pool.add_query(chosen, slices, expert=self.expert.name, sampler=sampler.name, iteration=t,
                                    scores=scores)
        self.log(f"active round {r}: queried {chosen} (sampler {sampler.name})")
        kill_point("after_query")
        self.answer_pending(t, entry)
        return entry

    def next_random_cases(self, candidates: list[str], size: int) -> list[str]:
        """A random query (round 0, the RAND sampler): the first ``size`` of ``candidates`` in one random order of
        the whole pool per FMABS_SEED. Common random numbers: runs with one seed share their random scans, so
        Sup cross's B scans are FM-ABS RAND's B scans, and HER starts from Sup cross's first ones."""
        unlabeled = set(candidates)
        order = random_order(self.pool.training_cases, np.random.default_rng([self.settings.seed, 0]))
        return [str(c) for c in order if c in unlabeled][:size]

    def answer_pending(self, t: int, entry: dict | None = None) -> None:
        """The expert's answer to the pending round into the pool; a person's round saves and exits."""
        entry = entry or self.pool.pending_round
        access = self._access()
        if getattr(self.expert, "blocks", False):  # waits in the job: a kill meanwhile loses nothing
            self.save()
        answers = self.expert.answer(entry, access)
        if answers is None:  # a person labels the slices: save everything and exit
            self.save()
            raise AwaitingExpert(self.expert.waiting_message(entry))
        self.pool.answer(answers, {c: access.shape(c) for c in entry["cases"]})
        kill_point("after_answer")
        self.log(f"round {entry['round']}: {len(entry['cases'])} scans labeled by {entry['expert']}; "
                 f"pool {len(self.pool.labeled_cases)}/{self.pool.budget}")

    def _access(self):
        student = self._student

        def labels(case):
            return self.predict(student, self.source.load_case(case)[0]).argmax(0).astype(np.uint8)

        return self.source.access(labels if student is not None else None)

    # -- pseudo labels (2.2) ----------------------------------------------------------------------
    def label_sources(self) -> dict[str, tuple]:
        """Where each labeled scan's labels are: the pool's three planes, or the dataset's own seg."""
        return {c: ("cross", str(self.pool.folder / info["file"])) if info["file"] else ("dataset", None)
                for c, info in self.pool.state["cases"].items()}

    def generalist(self):
        """The frozen 2D generalist, built once (by the factory the trainer gives).

        Built under a fork of torch's random state: building a model draws its initial weights (and SAM's
        random positional encoding) from torch's global generator before the checkpoint replaces them, and
        those draws would shift every later augmentation, perturbation and dropout of the training. Runs
        that differ only in where Y_f comes from (FMABS_PL_SOURCE, the prompt recipe) then stay paired.
        """
        if self._generalist is None:
            import torch

            devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []  # CPU: its own state
            with torch.random.fork_rng(devices=devices):
                self._generalist = self._generalist_factory()
        return self._generalist

    # -- what a run shows ---------------------------------------------------------------------------
    def active_learning_curve(self, t: int, student) -> None:
        """Student Dice on the fold's validation scans vs labeled slices, after each round (CSV, PNG)."""
        from nnunet_fmabs.annotation.curve import append_curve_point

        src = self.source
        dices = []
        for case in src.validation_cases:
            data, seg, _, _ = src.load_case(case)
            pred = self.predict(student, data).argmax(0)
            gt = np.asarray(seg[0][:])
            valid = (gt >= 0) & (gt != src.ignore_value) if src.has_ignore_label else gt >= 0
            dices.append(dice((pred > 0) & valid, (gt > 0) & valid))
        append_curve_point(self.folder, {
            "round": len(self.pool.rounds) - 1, "iteration": t, "labeled_scans": len(self.pool.labeled_cases),
            "labeled_slices": self.pool.n_labeled_slices, "val_dice": float(np.mean(dices)) if dices else float("nan"),
        })

    def run_metrics(self) -> dict[str, float]:
        """The pool's size and the latest pseudo-label round's agreement with the expert's planes (NaN before
        the first), one value per epoch for nnU-Net's logger."""
        last = self.pl_store.rounds[-1] if self.use_sam_loss and self.pl_store.rounds else {}
        return {"fmabs_labeled_scans": float(len(self.pool.labeled_cases)),
                "fmabs_pl_rounds": float(len(self.pl_store.rounds)) if self.use_sam_loss else 0.0,
                "fmabs_pl_dice_yf_planes": float(last.get("planes_dice_yf", np.nan)),
                "fmabs_pl_dice_teacher_planes": float(last.get("planes_dice_teacher", np.nan)),
                "fmabs_pl_accepted": float(last["accepted"]) if "accepted" in last else np.nan}
