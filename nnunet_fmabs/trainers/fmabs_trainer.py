"""FMABSTrainer: the FM-ABS paradigm as one nnU-Net trainer (Xu et al., MICCAI 2024, section 2).

    L = L_sup^cross + lambda_sam(t) L_sup^SAM + lambda_c(t) L_c          (eq. 1, eq. 3)

Student trained by SGD on two streams (B cross-labeled + B unlabeled patches); teacher = EMA of the
student; Y_f (fused generalist pseudo labels, refreshed in a few rounds) supervises both streams
through the noise-tolerant Dice; active rounds ask an expert for three slices of K more scans.
Every knob is a class attribute, so a variant is one line (see ``variants.py``); run knobs that a
user sets without a class come from ``FMABS_*`` variables (:mod:`nnunet_fmabs.settings`).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunet_fmabs import atomic
from nnunet_fmabs.faults import kill_point
from nnunet_fmabs.annotation.experts import ScanAccess, SimulatedExpert
from nnunet_fmabs.annotation.pool import LabeledPool, PoolError
from nnunet_fmabs.annotation.rounds import budget_from_spec, round_iterations, round_sizes
from nnunet_fmabs.losses import (consistency_loss, ema_update, noise_tolerant_dice, partial_cross_entropy,
                                 perturb)
from nnunet_fmabs.pseudolabels.fusion import apply_expert_labels
from nnunet_fmabs.pseudolabels.labeler import dice, label_volume, label_volume_fine
from nnunet_fmabs.pseudolabels.quality import PlaneAgreement, round_accepted
from nnunet_fmabs.pseudolabels.store import PseudoLabelStore
from nnunet_fmabs.samplers import get_sampler, select_cases
from nnunet_fmabs.schedules import at_epoch_start, gaussian_rampup, lambda_c, lambda_sam
from nnunet_fmabs.settings import RunSettings
from nnunet_fmabs.trainers.common import AtomicCheckpointMixin, PaperScheduleMixin
from nnunet_fmabs.trainers.streams import (BarelyLabeledDataset, LabeledStreamLoader, TwoStreamLoader,
                                           make_augmenter)

EXIT_AWAITING_EXPERT = 3  # exit status while a person labels the queried slices
LOSS_TERMS = ("loss_cross", "loss_sam", "loss_cons", "lambda_sam", "lambda_c")
RUN_METRICS = ("fmabs_labeled_scans", "fmabs_pl_rounds", "fmabs_pl_dice_yf_planes", "fmabs_pl_dice_teacher_planes",
               "fmabs_pl_accepted")
"""Logged once per epoch through nnU-Net's logger (and so to W&B when ``nnUNet_wandb_enabled``): the labeled
pool's size and the latest pseudo-label round's agreement with the expert's planes (NaN before the first)."""


class AwaitingExpert(SystemExit):
    """Raised (an exit, not a crash) when a round waits for a person's labels."""

    def __init__(self, message: str):
        print(message, file=sys.stderr, flush=True)
        super().__init__(EXIT_AWAITING_EXPERT)


class FMABSTrainer(AtomicCheckpointMixin, PaperScheduleMixin, nnUNetTrainer):
    # -- the paradigm's knobs (variants override these) -----------------------------------------
    sampler: str = "random"  # active score of 2.3: random | LC | HE | HER | a plugin's name
    fusion: str = "MV"  # UA (all three views) | MV (at least two), 2.2
    active_rounds: bool = True  # False: the whole budget picked at random at t = 0
    use_unlabeled_stream: bool = True  # B unlabeled patches per iteration beside the B labeled ones
    use_sam_loss: bool = True  # L_sup^SAM on Y_f (eq. 2)
    use_consistency: bool = True  # L_c between teacher and student (2.2)
    uncertainty_aware: bool = False  # UA-MT (Yu et al. 2019): L_c only where the teacher is certain
    ema_alpha: float = 0.99
    consistency_perturbations: int = 2  # J
    nt_dice_gamma: float = 1.5
    nt_dice_eps: float = 1e-5
    uamt_passes: int = 4  # stochastic teacher passes for UA-MT's uncertainty

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        from nnunet_fmabs.validation import check_labels

        check_labels(dataset_json.get("labels"), f"dataset.json of {plans.get('dataset_name', '?')}",
                     binary=self.use_sam_loss)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.settings = RunSettings.from_environ()
        self._apply_paper_schedule(self.settings)
        self.enable_deep_supervision = False  # the paper's V-Net has a single output
        self.teacher: nn.Module | None = None
        self.iteration = 0
        self.pool: LabeledPool | None = None
        self.pl_store: PseudoLabelStore | None = None
        self._resumed_from_checkpoint = False
        self._generalist = None
        self._predictor = None
        for key in LOSS_TERMS + RUN_METRICS:
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])

    # -- paths ------------------------------------------------------------------------------------
    @property
    def fmabs_folder(self) -> Path:
        return Path(self.output_folder) / "fmabs"

    @property
    def uses_teacher(self) -> bool:
        return self.use_consistency or self.use_sam_loss

    @property
    def ignore_value(self) -> int:
        lm = self.label_manager
        return int(lm.ignore_label) if lm.has_ignore_label else int(max(lm.all_labels)) + 1

    # -- set-up -----------------------------------------------------------------------------------
    def initialize(self):
        if self.was_initialized:
            return
        # FMABS_SEED fixes the network's initial weights, the batches and the perturbations; a resumed
        # run then restores its random streams from the checkpoint (load_checkpoint)
        random.seed(self.settings.seed)
        torch.manual_seed(self.settings.seed)
        np.random.seed(self.settings.seed % 2**32)
        super().initialize()
        if self.uses_teacher:
            self.teacher = self.build_network_architecture(
                self.plans_manager, self.configuration_manager, self.num_input_channels,
                self.label_manager.num_segmentation_heads, self.enable_deep_supervision).to(self.device)
            self.teacher.load_state_dict(self._student().state_dict())
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.teacher.eval()

    def _student(self) -> nn.Module:
        mod = self.network.module if self.is_ddp else self.network
        return getattr(mod, "_orig_mod", mod)

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        self.dataset_class = self.dataset_class or infer_dataset_class(self.preprocessed_dataset_folder)
        if self.teacher is not None and not self._resumed_from_checkpoint:
            # nnU-Net's -pretrained_weights loads into the student after initialize(): the teacher starts
            # from the same weights (EMA of the student from its first state)
            self.teacher.load_state_dict(self._student().state_dict())
        self._open_run_state()
        self._run_due_events(initial=True)
        super().on_train_start()

    def _open_run_state(self) -> None:
        folder = self.fmabs_folder
        settings_file = folder / "settings.json"
        if settings_file.is_file():
            stored = RunSettings.load_dict(settings_file)
            if stored.get("trainer", self.__class__.__name__) != self.__class__.__name__:
                raise RuntimeError(f"{folder} belongs to trainer {stored.get('trainer')}, not "
                                   f"{self.__class__.__name__}")
            self.settings.check_same(stored, str(self.output_folder))
            if not self._resumed_from_checkpoint and "--c" not in sys.argv:
                pool_file = folder / "pool" / "pool.json"
                raise RuntimeError(
                    f"{self.output_folder} already holds an FM-ABS run (labels in {pool_file}). "
                    "Continue it with `--c`, or move the folder away to start a new run: "
                    "labels that cost an expert's time are never overwritten."
                )
        else:
            atomic.write_json(settings_file, {**self.settings.to_dict(), "trainer": self.__class__.__name__})
        tr_keys, _ = self.do_split()
        budget = budget_from_spec(self.settings.budget, len(tr_keys))
        prelabeled = self._scans_labeled_by_the_dataset(tr_keys)
        budget = max(budget, len(prelabeled))
        self.pool = LabeledPool.open(folder / "pool", budget, tr_keys)
        if prelabeled and not self.pool.rounds:
            self.pool.add_dataset_labels(prelabeled)
        self.pl_store = PseudoLabelStore(folder / "pseudolabels")
        if prelabeled:  # the dataset's own sparse labels are round 0; K per round after that
            rest = budget - len(prelabeled)
            sizes = [len(prelabeled)] + [min(self.settings.k, rest - i) for i in range(0, rest, self.settings.k)]
        elif self.active_rounds:
            sizes = round_sizes(budget, self.settings.k, self.settings.warmup_fraction)
        else:
            sizes = [budget]
        # rounds run at epoch starts (at_epoch_start): the plans below are the iterations they really run at
        start = partial(at_epoch_start, iterations_per_epoch=self.num_iterations_per_epoch, epochs=self.num_epochs)
        self.round_plan = [(size, start(t)) for size, t in
                           zip(sizes, round_iterations(len(sizes), self.t_max, self.settings.al_spread))]
        self.pl_plan = sorted({start(int(round(float(f) * self.t_max))) for f in self.settings.pl_rounds.split(",")
                               if f.strip()}) if self.use_sam_loss else []
        self.expert = self._make_expert()
        self.print_to_log_file(
            f"FM-ABS: budget {budget} scans ({3 * budget} slices) of {len(tr_keys)}, rounds "
            f"{[s for s, _ in self.round_plan]} at iterations {[t for _, t in self.round_plan]}, "
            f"sampler {self.sampler}, fusion {self.fusion}, expert {self.expert.name}, t_max {self.t_max}, "
            f"pseudo-label rounds at {self.pl_plan}")
        if self.use_sam_loss:
            self.print_to_log_file(f"FM-ABS {self.settings.recipe().describe()}; training grid spacing "
                                   f"{list(self.configuration_manager.spacing)} mm; fusion {self.fusion}")

    def _resume_command(self) -> str:
        """The command that continues this run: the user's own nnUNetv2_train line plus --c."""
        import shlex

        if os.path.basename(sys.argv[0]).startswith("nnUNetv2_train"):
            args = [a for a in sys.argv[1:] if a != "--c"]
            return " ".join(shlex.quote(a) for a in ["nnUNetv2_train", *args, "--c"])
        return (f"nnUNetv2_train {self.plans_manager.dataset_name} {self.configuration_name} {self.fold} "
                f"-tr {self.__class__.__name__} -p {self.plans_manager.plans_name} -device {self.device.type} --c")

    def _scans_labeled_by_the_dataset(self, cases) -> list[str]:
        """Scans of a barely labeled dataset (one that declares nnU-Net's ignore label) with labels."""
        if not self.label_manager.has_ignore_label:
            return []
        ignore = self.label_manager.ignore_label
        labeled = []
        for case in cases:
            seg = np.asarray(self._load_case(case)[1][:])
            if np.any((seg >= 0) & (seg != ignore)):
                labeled.append(case)
        return labeled

    def _make_expert(self):
        kind = self.settings.expert
        if kind == "auto":
            kind = "human" if self.label_manager.has_ignore_label else "simulated"
        if kind == "simulated":
            if self.label_manager.has_ignore_label:
                raise ValueError("FMABS_EXPERT=simulated needs dense labels, but this dataset declares an "
                                 "ignore label (it is barely labeled): use FMABS_EXPERT=human")
            return SimulatedExpert(self.settings.slice_rule)
        if kind == "human":
            from nnunet_fmabs.annotation.human import HumanExpert

            cmd = self._resume_command()
            return HumanExpert.from_environ(self.fmabs_folder / "queries", cmd, self.dataset_json["file_ending"],
                                            log=self.print_to_log_file)
        raise ValueError(f"FMABS_EXPERT={kind!r}: use simulated, human or auto")

    # -- scans, as experts and rounds see them ------------------------------------------------------
    def _load_case(self, case: str):
        return self.dataset_class(self.preprocessed_dataset_folder, [case]).load_case(case)

    def _scan_access(self) -> ScanAccess:
        from nnunetv2.paths import nnUNet_raw

        def shape(case):
            return tuple(self._load_case(case)[0].shape[1:])

        def properties(case):
            return self._load_case(case)[3]

        def dense(case):
            return np.asarray(self._load_case(case)[1][:])

        def prediction(case):
            probs = self._predict(self._student(), self._load_case(case)[0])
            return probs.argmax(0).astype(np.uint8)

        def raw_image(case):
            if not nnUNet_raw.is_set():
                return None
            p = Path(nnUNet_raw.get()) / self.plans_manager.dataset_name / "imagesTr" / \
                f"{case}_0000{self.dataset_json['file_ending']}"
            return p if p.is_file() else None

        max_label = int(max(self.label_manager.all_labels))
        return ScanAccess(shape=shape, properties=properties,
                          dense_label=None if self.label_manager.has_ignore_label else dense,
                          prediction=prediction, raw_image=raw_image,
                          transpose_forward=self.plans_manager.transpose_forward,
                          max_label=max_label, label_names={
                              str(k): int(v) for k, v in self.dataset_json["labels"].items()
                              if isinstance(v, int) and 0 <= v <= max_label})

    def _predict(self, network: nn.Module, data) -> np.ndarray:
        """Class probabilities of one preprocessed scan, nnU-Net's sliding window, no mirroring."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        if self._predictor is None:
            self._predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                              perform_everything_on_device=self.device.type != "cpu",
                                              device=self.device, verbose=False, verbose_preprocessing=False,
                                              allow_tqdm=False)
        self._predictor.manual_initialization(network, self.plans_manager, self.configuration_manager, None,
                                              self.dataset_json, self.__class__.__name__,
                                              self.inference_allowed_mirroring_axes)
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                logits = self._predictor.predict_sliding_window_return_logits(
                    torch.from_numpy(np.asarray(data[:])).float())
        finally:
            network.train(was_training)
        return torch.softmax(logits.float(), 0).cpu().numpy()

    # -- events: active rounds and pseudo-label rounds ---------------------------------------------
    def _run_due_events(self, initial: bool = False) -> bool:
        """Run every round due at the current iteration; True when the batch streams must be rebuilt."""
        t = self.current_epoch * self.num_iterations_per_epoch
        self.iteration = t
        labels_added = False
        if self.pool.pending_round is not None:
            self._answer_pending(t)
            labels_added = True
        while True:
            done = len([r for r in self.pool.rounds if r["status"] == "answered"])
            if done >= len(self.round_plan) or self.pool.remaining_budget <= 0 or self.round_plan[done][1] > t:
                break
            if t > 0:  # the Dice the student reached with the labels it had so far
                self._active_learning_curve(t)
            self._active_round(done, t)
            labels_added = True
        pl_due = self.use_sam_loss and t > 0 and (
            labels_added or any(self._last_pl_iteration() < s <= t for s in self.pl_plan))
        if pl_due:
            try:
                self._pseudo_label_round(t, "after an active round" if labels_added else "schedule")
            except Exception as e:  # the generalist raised, the disk is full, ...: keep the last Y_f
                import traceback

                self.print_to_log_file(
                    f"pseudo-label round at iteration {t} FAILED ({type(e).__name__}: {e}); training goes on with "
                    f"the previous pseudo labels ({self.pl_store.latest_dir or 'none yet'}); the round is retried "
                    f"at the next epoch.\n{traceback.format_exc()}")
                self._pl_failures = getattr(self, "_pl_failures", 0) + 1
                if self._pl_failures >= 3:
                    raise RuntimeError("three pseudo-label rounds failed in a row; see the log above") from e
            else:
                self._pl_failures = 0
        if labels_added or pl_due:
            self._save_now()
        return labels_added or pl_due

    def _last_pl_iteration(self) -> int:
        last = self.pl_store.last_iteration
        return -1 if last is None else last

    def _active_round(self, r: int, t: int) -> None:
        size = min(self.round_plan[r][0], self.pool.remaining_budget)
        candidates = self.pool.unlabeled_cases
        sampler = get_sampler(self.sampler if r > 0 else "random")
        rng = np.random.default_rng([self.settings.seed, r])
        scores: dict[str, float] | list[str]
        if getattr(sampler, "needs_probabilities", True):
            scores = {}
            for case in tqdm(candidates, desc=f"round {r}: scoring with {sampler.name}", disable=False):
                scores[case] = float(sampler.score(self._predict(self._student(), self._load_case(case)[0]),
                                                   t=t, t_max=self.t_max))
        else:
            scores = list(candidates)
        chosen = [str(c) for c in select_cases(sampler, scores, size, rng)]
        access = self._scan_access()
        slices = {c: self.expert.propose_slices(c, access) for c in chosen}
        entry = self.pool.add_query(chosen, slices, expert=self.expert.name, sampler=sampler.name, iteration=t,
                                    scores=scores if isinstance(scores, dict) else None)
        self.print_to_log_file(f"active round {r}: queried {chosen} (sampler {sampler.name})")
        kill_point("after_query")
        self._answer_pending(t, entry)

    def _answer_pending(self, t: int, entry: dict | None = None) -> None:
        entry = entry or self.pool.pending_round
        access = self._scan_access()
        if getattr(self.expert, "blocks", False):  # waits in the job: a kill meanwhile loses nothing
            self._save_now()
        answers = self.expert.answer(entry, access)
        if answers is None:  # a person labels the slices: save everything and exit
            self._save_now()
            raise AwaitingExpert(self.expert.waiting_message(entry))
        self.pool.answer(answers, {c: access.shape(c) for c in entry["cases"]})
        kill_point("after_answer")
        self.print_to_log_file(f"round {entry['round']}: {len(entry['cases'])} scans labeled by "
                               f"{entry['expert']}; pool {len(self.pool.labeled_cases)}/{self.pool.budget}")

    def _label_sources(self) -> dict[str, tuple]:
        """Where each labeled scan's labels are: the pool's three planes, or the dataset's own seg."""
        return {c: ("cross", str(self.pool.folder / info["file"])) if info["file"] else ("dataset", None)
                for c, info in self.pool.state["cases"].items()}

    def _pseudo_label_round(self, t: int, reason: str) -> None:
        """Teacher mask -> prompts -> generalist per view -> UA/MV -> expert override -> Y_f (2.2), then the
        round guard (expert planes)."""
        teacher = self.teacher
        fingerprint = _fingerprint(teacher)
        index, partial = self.pl_store.begin_round(fingerprint)
        done = self.pl_store.done_cases(partial)
        generalist = self._get_generalist()
        sources = self._label_sources()
        simulation = not self.label_manager.has_ignore_label
        stats = {"dice_yf": [], "dice_teacher": [], "prompted_slices": 0}
        figure_case = None
        for case in tqdm(self.pool.training_cases, desc=f"pseudo labels, round {index}", disable=False):
            if case in done:
                continue
            data, seg, _, props = self._load_case(case)
            probs = self._predict(teacher, data)
            teacher_mask = probs.argmax(0) > 0
            rng = np.random.default_rng([self.settings.seed, 7919 + index, zlib.crc32(case.encode())])
            cache_key = (self.plans_manager.dataset_name, self.configuration_name, case)
            raw = self._raw_for_prompts(case, props, teacher_mask.shape)
            if raw is None:
                labels = label_volume(np.asarray(data[0]), teacher_mask, generalist, rng, fusion=self.fusion,
                                      spacing=self.configuration_manager.spacing, recipe=self.settings.recipe(),
                                      cache_key=cache_key)
            else:
                labels = label_volume_fine(raw[0], teacher_mask, generalist, rng, raw[2], fine_spacing=raw[1],
                                           spacing=self.configuration_manager.spacing, fusion=self.fusion,
                                           recipe=self.settings.recipe(), cache_key=(*cache_key, "raw"))
            y_f = labels.fused.astype(np.uint8)
            planes = None
            if case in sources:  # on the expert's slices the expert's labels replace Y_f
                cross = self._cross_target(case, sources, teacher_mask.shape)
                planes = PlaneAgreement.of_case(labels.fused, teacher_mask, cross, self.ignore_value).as_array()
                y_f = apply_expert_labels(labels.fused, cross, self.ignore_value)
            self.pl_store.save_case(partial, case, y_f, teacher_mask, planes)
            kill_point("pseudo_label_case")
            stats["prompted_slices"] += labels.n_prompted_slices
            if simulation:  # measured for the log, never trained on
                gt = np.asarray(seg[0][:]) > 0
                stats["dice_yf"].append(dice(y_f > 0, gt))
                stats["dice_teacher"].append(dice(teacher_mask, gt))
            if figure_case is None:
                figure_case = (case, np.asarray(data[0]), teacher_mask, labels,
                               np.asarray(seg[0][:]) > 0 if simulation else None)
        summary = {"prompted_slices": stats["prompted_slices"], "teacher_fingerprint": fingerprint}
        if stats["dice_yf"]:
            summary["mean_dice_yf"] = float(np.mean(stats["dice_yf"]))
            summary["mean_dice_teacher"] = float(np.mean(stats["dice_teacher"]))
        summary.update(self._guard_round(partial, sources))
        kill_point("before_pseudo_label_commit")
        final = self.pl_store.commit_round(index, partial, iteration=t, reason=reason, stats=summary)
        self.print_to_log_file(f"pseudo-label round {index} ({reason}) at iteration {t}: {summary}")
        if figure_case is not None:
            self._round_figure(final, *figure_case, summary=summary)

    def _raw_for_prompts(self, case: str, props: dict, shape) -> tuple | None:
        """FMABS_PROMPT_RESOLUTION=raw: (raw image transposed like the training grid, its spacing, index maps)
        when the raw image is finer than the training grid along some axis; None otherwise (grid slices)."""
        if self.settings.prompt_resolution != "raw":
            return None
        import SimpleITK as sitk

        from nnunet_fmabs.annotation.geometry import CaseGeometry

        path = self._scan_access().raw_image(case)
        if path is None:
            raise FileNotFoundError(f"FMABS_PROMPT_RESOLUTION=raw: no raw image of {case} under nnUNet_raw "
                                    f"({self.plans_manager.dataset_name}/imagesTr)")
        image = sitk.ReadImage(str(path))
        tf = list(self.plans_manager.transpose_forward)
        spacing = [float(image.GetSpacing()[::-1][a]) for a in tf]
        if all(s >= g - 1e-6 for s, g in zip(spacing, self.configuration_manager.spacing)):
            return None  # the training grid is as fine as the raw image: nothing to gain
        raw = np.ascontiguousarray(sitk.GetArrayFromImage(image).astype(np.float32).transpose(tf))
        geometry = CaseGeometry.from_properties(props, tf, shape)
        return raw, spacing, geometry.pp_index_maps()

    def _guard_round(self, partial: Path, sources: dict) -> dict:
        """The round guard (nnunet_fmabs.pseudolabels.quality): Y_f and teacher against the expert's planes;
        a rejected round trains on the expert's planes only (Y_f kept in the files as ``y_generalist``)."""
        agreement = sum((PlaneAgreement.from_array(v) for v in self.pl_store.case_planes(partial).values()),
                        PlaneAgreement())
        accepted = self.settings.pl_guard == "off" or round_accepted(agreement, self.settings.pl_guard_margin)
        out = {"planes_dice_yf": agreement.dice_yf, "planes_dice_teacher": agreement.dice_teacher,
               "planes_voxels": agreement.voxels, "accepted": bool(accepted)}
        if not accepted:
            for case in self.pl_store.done_cases(partial):
                with np.load(partial / f"{case}.npz") as z:
                    shape = z["y"].shape
                fallback = np.full(shape, self.ignore_value, dtype=np.uint8)
                if case in sources:  # the expert's planes, unknown elsewhere
                    cross = self._cross_target(case, sources, shape)
                    fallback = np.where((cross >= 0) & (cross != self.ignore_value), cross,
                                        self.ignore_value).astype(np.uint8)
                self.pl_store.replace_labels(partial, case, fallback)
            self.print_to_log_file(
                f"pseudo-label round REJECTED by the guard: on the expert's planes Y_f Dice {agreement.dice_yf:.3f} "
                f"< teacher {agreement.dice_teacher:.3f} - {self.settings.pl_guard_margin:g}; this round trains "
                "L_sup^SAM on the expert's planes only")
        return out

    def _cross_target(self, case: str, sources: dict, shape) -> np.ndarray:
        kind, path = sources[case]
        if kind == "dataset":
            seg = np.asarray(self._load_case(case)[1][0]).astype(np.int16)
            seg[seg < 0] = self.ignore_value
            return seg
        with np.load(path) as z:
            from nnunet_fmabs.annotation.pool import CrossAnnotation

            ann = CrossAnnotation(tuple(int(i) for i in z["slices"]), (z["axis0"], z["axis1"], z["axis2"]))
        return ann.to_volume(shape, self.ignore_value)

    def _round_figure(self, folder: Path, case, image, teacher_mask, labels, gt, summary: dict) -> None:
        try:
            from nnunet_fmabs.pseudolabels.figure import save_round_figure

            guard = (f"expert planes: Dice Y_f {summary['planes_dice_yf']:.3f} vs teacher "
                     f"{summary['planes_dice_teacher']:.3f} -> round {'accepted' if summary['accepted'] else 'REJECTED'}")
            save_round_figure(folder / f"{case}.png", image, teacher_mask, labels.views, labels.fused, gt,
                              title=f"{case}: teacher, per-view generalist masks, fused Y_f ({self.fusion})\n{guard}")
        except Exception as e:  # a picture must never stop training
            self.print_to_log_file(f"could not draw the pseudo-label figure: {e}")

    def _get_generalist(self):
        if self._generalist is None:
            from nnunet_fmabs.generalists import get_generalist

            options = {}
            if self.settings.generalist_dtype != "auto":
                options["dtype"] = self.settings.generalist_dtype
            if self.settings.generalist_batch_size:
                options["batch_size"] = self.settings.generalist_batch_size
            self._generalist = get_generalist(self.settings.generalist,
                                              checkpoint=self.settings.generalist_checkpoint or None,
                                              device=str(self.device), **options)
            cache = self._embedding_cache()
            if cache is not None and hasattr(self._generalist, "set_cache"):
                self._generalist.set_cache(cache)
            points = getattr(self._generalist, "use_points", True)
            self.print_to_log_file(
                f"generalist {self._generalist!r}: prompted with boxes"
                + (" and points" if points else " only (a box-only family: points are not passed)"))
        return self._generalist

    def _embedding_cache(self):
        where = self.settings.embedding_cache
        if where == "off":
            return None
        from nnunet_fmabs.generalists.cache import EmbeddingCache

        folder = self.fmabs_folder / "embedding_cache" if where == "run" else Path(where)
        return EmbeddingCache(folder, max_bytes=int(self.settings.embedding_cache_gb * 2**30))

    def _active_learning_curve(self, t: int) -> None:
        """Student Dice on the fold's validation scans vs labeled slices, after each round (CSV, PNG)."""
        from nnunet_fmabs.annotation.curve import append_curve_point

        _, val_keys = self.do_split()
        dices = []
        for case in val_keys:
            data, seg, _, _ = self._load_case(case)
            pred = self._predict(self._student(), data).argmax(0)
            gt = np.asarray(seg[0][:])
            valid = (gt >= 0) & (gt != self.ignore_value) if self.label_manager.has_ignore_label else gt >= 0
            dices.append(dice((pred > 0) & valid, (gt > 0) & valid))
        append_curve_point(self.fmabs_folder, {
            "round": len(self.pool.rounds) - 1, "iteration": t, "labeled_scans": len(self.pool.labeled_cases),
            "labeled_slices": self.pool.n_labeled_slices, "val_dice": float(np.mean(dices)) if dices else float("nan"),
        })

    def _save_now(self) -> None:
        """Checkpoint at an epoch start so that ``--c`` resumes at this very epoch."""
        if self.optimizer is None:
            return
        self.current_epoch -= 1
        try:
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
        finally:
            self.current_epoch += 1

    # -- batches ----------------------------------------------------------------------------------
    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's augmentation, but voxels padded outside the image become ignore, not background."""
        transforms = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        for i, t in enumerate(transforms.transforms):
            if isinstance(t, RemoveLabelTransform) and t.label_value == -1:
                transforms.transforms[i] = RemoveLabelTransform(-1, self.ignore_value)
        return transforms

    def get_dataloaders(self):
        patch_size = self.configuration_manager.patch_size
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        tr_transforms = self.get_training_transforms(
            patch_size, rotation, None, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=False,
            foreground_labels=self.label_manager.foreground_labels, regions=None, ignore_label=None)
        val_transforms = self.get_validation_transforms(None, is_cascaded=False,
                                                        foreground_labels=self.label_manager.foreground_labels,
                                                        regions=None, ignore_label=self.label_manager.ignore_label)
        tr_keys, val_keys = self.do_split()
        base = self.dataset_class(self.preprocessed_dataset_folder, list(tr_keys))
        sources = self._label_sources()
        pseudo_dir = str(self.pl_store.latest_dir) if self.pl_store.latest_dir is not None else None
        key = tuple([-1] + list(self.label_manager.all_labels))
        labeled = BarelyLabeledDataset(base, list(sources), sources, self.ignore_value, pseudo_dir, key)
        if not labeled.identifiers:
            raise PoolError("the labeled pool is empty: no scan to train on")
        n_proc = get_allowed_n_proc_DA()
        per_stream = 0 if n_proc == 0 else max(1, n_proc // 2)
        seed = self.settings.seed + 1000 * self.current_epoch
        dl_lab = LabeledStreamLoader(labeled, self.batch_size, initial_patch_size, patch_size, self.label_manager,
                                     oversample_foreground_percent=self.oversample_foreground_percent,
                                     transforms=tr_transforms, annotated_key=key)
        streams = [make_augmenter(dl_lab, per_stream, self.device.type == "cuda", seed)]
        unlabeled_ids = [c for c in tr_keys if c not in sources]
        if self.use_unlabeled_stream and unlabeled_ids:
            unlabeled = BarelyLabeledDataset(base, unlabeled_ids, {}, self.ignore_value, pseudo_dir, key)
            dl_unl = nnUNetDataLoader(unlabeled, self.batch_size, initial_patch_size, patch_size, self.label_manager,
                                      oversample_foreground_percent=0.0, transforms=tr_transforms)
            streams.append(make_augmenter(dl_unl, per_stream, self.device.type == "cuda", seed + 500))
        train = TwoStreamLoader(*streams)
        dataset_val = self.dataset_class(self.preprocessed_dataset_folder, list(val_keys))
        dl_val = nnUNetDataLoader(dataset_val, self.batch_size, patch_size, patch_size, self.label_manager,
                                  oversample_foreground_percent=self.oversample_foreground_percent,
                                  transforms=val_transforms)
        val = make_augmenter(dl_val, 0 if n_proc == 0 else 1, self.device.type == "cuda", seed + 900)
        return train, val

    def _rebuild_streams(self) -> None:
        self._finish_streams()
        self.dataloader_train, self.dataloader_val = self.get_dataloaders()

    def _finish_streams(self) -> None:
        if isinstance(self.dataloader_train, TwoStreamLoader):
            self.dataloader_train.finish()
        if self.dataloader_val is not None and hasattr(self.dataloader_val, "_finish"):
            self.dataloader_val._finish()

    # -- the loop ----------------------------------------------------------------------------------
    def on_train_epoch_start(self):
        if self.current_epoch > 0 or self._resumed_from_checkpoint:
            if self._run_due_events():
                self._rebuild_streams()
        super().on_train_epoch_start()

    def train_step(self, batch: dict) -> dict:
        """One SGD step on L = L_sup^cross + lambda_sam L_sup^SAM + lambda_c L_c (eq. 3), on nnU-Net's
        structure: forward passes under autocast on CUDA (``_autocast``), the losses in fp32, nnU-Net's
        GradScaler for fp16, gradient clipping at 12; then the teacher's EMA update."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        n_lab = int(batch["n_labeled"])
        t, t_max = self.iteration, self.t_max
        ignore = self.ignore_value
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.network(data)
        logits = logits.float()
        probs = torch.softmax(logits, 1)
        loss_cross = partial_cross_entropy(logits[:n_lab], target[:n_lab, 0], ignore)
        loss = loss_cross
        terms = {"loss_cross": loss_cross.detach(), "lambda_sam": 0.0, "lambda_c": 0.0}
        if self.use_sam_loss:
            y_f = target[:, 1]
            valid = (y_f != ignore) & (y_f >= 0)
            if bool(valid.any()):
                onehot = torch.zeros_like(probs)
                onehot.scatter_(1, torch.where(valid, y_f, 0).long()[:, None], 1.0)
                w = lambda_sam(t, t_max)
                loss_sam = noise_tolerant_dice(probs, onehot, gamma=self.nt_dice_gamma, eps=self.nt_dice_eps,
                                               mask=valid[:, None].float())
                loss = loss + w * loss_sam
                terms.update(loss_sam=loss_sam.detach(), lambda_sam=w)
        if self.use_consistency:
            w = lambda_c(t, t_max)
            loss_cons = self._consistency(data, probs, t)
            loss = loss + w * loss_cons
            terms.update(loss_cons=loss_cons.detach(), lambda_c=w)
        if self._scaled_gradients:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        if self.teacher is not None:
            ema_update(self.teacher, self._student(), alpha=self.ema_alpha)
        self.iteration += 1
        kill_point("mid_epoch")
        out = {"loss": loss.detach().cpu().numpy()}
        out.update({k: float(v) for k, v in terms.items()})
        return out

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """Mixed precision as nnU-Net's: only on CUDA (fp32 on CPU); bf16 where the GPU supports it
        (no loss scaling needed), else fp16 with nnU-Net's GradScaler."""
        if self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    @property
    def _scaled_gradients(self) -> bool:
        return self.grad_scaler is not None and self.amp_dtype == torch.float16

    def _autocast(self):
        dtype = self.amp_dtype
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def _teacher_passes(self, data: torch.Tensor, n: int) -> list[torch.Tensor]:
        """softmax(teacher(X + xi_j)), j = 1..n, as ONE batched teacher call on n perturbed copies of the
        batch (nnU-Net's instance norm keeps the samples independent). No gradients."""
        with torch.no_grad(), self._autocast():
            logits = self.teacher(perturb(data.repeat(n, *([1] * (data.ndim - 1)))))
        return list(torch.softmax(logits.float(), 1).chunk(n))

    def _consistency(self, data: torch.Tensor, student_probs: torch.Tensor, t: int) -> torch.Tensor:
        """L_c: MAE between softmax(teacher(X + xi_j)) and softmax(student(X)), j = 1..J (2.2).
        Only the teacher's side runs without gradients; the loss itself reaches the student."""
        if not self.uncertainty_aware:
            return consistency_loss(student_probs, self._teacher_passes(data, self.consistency_perturbations))
        # UA-MT: T noisy teacher passes, entropy of their mean as uncertainty, mask below a ramp
        mean = torch.stack(self._teacher_passes(data, self.uamt_passes)).mean(0)
        uncertainty = -(mean * torch.log(mean + 1e-6)).sum(1, keepdim=True)
        threshold = (0.75 + 0.25 * gaussian_rampup(t, self.t_max)) * float(np.log(mean.shape[1]))
        return consistency_loss(student_probs, [mean], mask=(uncertainty < threshold).float())

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        for key in LOSS_TERMS:
            values = [o[key] for o in train_outputs if key in o]
            value = float(np.mean(values)) if values else 0.0
            self.logger.log(key, value, self.current_epoch)
        self.print_to_log_file(", ".join(
            f"{k} {self.logger.get_value(k, step=-1):.4f}" for k in LOSS_TERMS))
        for key, value in self._run_metrics().items():
            self.logger.log(key, value, self.current_epoch)

    def _run_metrics(self) -> dict[str, float]:
        """RUN_METRICS now: the pool's size, the latest pseudo-label round's expert-plane agreement."""
        last = self.pl_store.rounds[-1] if self.use_sam_loss and self.pl_store.rounds else {}
        return {"fmabs_labeled_scans": float(len(self.pool.labeled_cases)),
                "fmabs_pl_rounds": float(len(self.pl_store.rounds)) if self.use_sam_loss else 0.0,
                "fmabs_pl_dice_yf_planes": float(last.get("planes_dice_yf", np.nan)),
                "fmabs_pl_dice_teacher_planes": float(last.get("planes_dice_teacher", np.nan)),
                "fmabs_pl_accepted": float(last["accepted"]) if "accepted" in last else np.nan}

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank == 0:
            from nnunet_fmabs.trainers.plots import plot_loss_terms

            try:
                plot_loss_terms(self.logger.local_logger.my_fantastic_logging, LOSS_TERMS,
                                self.fmabs_folder / "loss_terms.png")
            except Exception as e:  # a picture must never stop training
                self.print_to_log_file(f"could not draw loss_terms.png: {e}")

    def on_train_end(self):
        self._active_learning_curve(self.t_max)
        self._finish_streams()
        self.dataloader_train = None
        super().on_train_end()

    # -- checkpoints --------------------------------------------------------------------------------
    def _checkpoint_dict(self) -> dict:
        checkpoint = super()._checkpoint_dict()
        checkpoint["fmabs"] = {
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "settings": self.settings.to_dict(),
            "trainer": self.__class__.__name__,
            "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()},
        }
        return checkpoint

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        logged = self.logger.local_logger.my_fantastic_logging
        for key in LOSS_TERMS + RUN_METRICS:  # a checkpoint of an older version lacks some: NaN so far
            logged.setdefault(key, [float("nan")] * self.current_epoch)
        stored = torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False) \
            if isinstance(filename_or_checkpoint, (str, os.PathLike)) else filename_or_checkpoint
        ours = stored.get("fmabs")
        if ours is None:
            raise RuntimeError(f"{filename_or_checkpoint} has no FM-ABS state: it was not written by an FM-ABS "
                               "trainer. Use a fresh output folder.")
        self.settings.check_same(ours["settings"], str(filename_or_checkpoint))
        if self.teacher is not None and ours["teacher"] is not None:
            self.teacher.load_state_dict(ours["teacher"])
        if "rng" in ours:  # the same batches and perturbations as a run that was never stopped
            np.random.set_state(ours["rng"]["numpy"])
            torch.set_rng_state(ours["rng"]["torch"].cpu())
            random.setstate(ours["rng"]["python"])
        self._resumed_from_checkpoint = True


def _fingerprint(module: nn.Module | None) -> str:
    if module is None:
        return "none"
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
