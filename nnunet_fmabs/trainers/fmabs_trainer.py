"""FMABSTrainer: the FM-ABS paradigm as one nnU-Net trainer (Xu et al., MICCAI 2024, section 2).

    L = L_sup^cross + lambda_sam(t) L_sup^SAM + lambda_c(t) L_c          (eq. 1, eq. 3)

Student trained by SGD on two streams (B cross-labeled + B unlabeled patches); teacher = EMA of the
student; Y_f (fused generalist pseudo labels, refreshed in a few rounds) supervises both streams
through the noise-tolerant Dice; active rounds ask an expert for three slices of K more scans.
Every knob is a class attribute, so a variant is one line (see ``variants.py``); run knobs that a
user sets without a class come from ``FMABS_*`` variables (:mod:`nnunet_fmabs.settings`).
"""
from __future__ import annotations

import os
import random
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTransform
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_fmabs.campaign import (EXIT_AWAITING_EXPERT, AwaitingExpert, Campaign, SlidingWindow,
                                   generalist_from_settings, make_expert, nnunet_case_source, rank_zero_first,
                                   resume_command, run_due_distributed)
from nnunet_fmabs.faults import kill_point
from nnunet_fmabs.losses import (CONSISTENCY_PERTURBATIONS, EMA_ALPHA, NT_DICE_EPS, NT_DICE_GAMMA, UAMT_PASSES,
                                 consistency_loss, ema_update, fmabs_loss, teacher_probabilities,
                                 uncertainty_aware_consistency)
from nnunet_fmabs.pseudolabels.quality import sam_target_trusted
from nnunet_fmabs.settings import RunSettings
from nnunet_fmabs.trainers.common import AtomicCheckpointMixin, MixedPrecisionMixin, PaperScheduleMixin
from nnunet_fmabs.trainers.streams import TwoStreamLoader, fmabs_dataloaders

LAMBDA_SAM_DESCRIPTIONS = {"paper": "eq. 3, 0.5 decaying to 0", "constant": "0.5 throughout",
                           "guarded": "0.5 while the latest round's target is trusted on the expert's planes, "
                                      "eq. 3 otherwise"}
__all__ = ["EXIT_AWAITING_EXPERT", "AwaitingExpert", "FMABSTrainer", "LOSS_TERMS", "RUN_METRICS"]
LOSS_TERMS = ("loss_cross", "loss_sam", "loss_cons", "lambda_sam", "lambda_c")
RUN_METRICS = ("fmabs_labeled_scans", "fmabs_pl_rounds", "fmabs_pl_dice_yf_planes", "fmabs_pl_dice_teacher_planes",
               "fmabs_pl_accepted")
"""Logged once per epoch through nnU-Net's logger (and so to W&B when ``nnUNet_wandb_enabled``): the labeled
pool's size and the latest pseudo-label round's agreement with the expert's planes (NaN before the first)."""


class FMABSTrainer(AtomicCheckpointMixin, PaperScheduleMixin, MixedPrecisionMixin, nnUNetTrainer):
    # -- the paradigm's knobs (variants override these) -----------------------------------------
    sampler: str = "random"  # active score of 2.3: random | LC | HE | HER | a plugin's name
    fusion: str = "MV"  # UA (all three views) | MV (at least two), 2.2
    active_rounds: bool = True  # False: the whole budget picked at random at t = 0
    use_unlabeled_stream: bool = True  # B unlabeled patches per iteration beside the B labeled ones
    use_sam_loss: bool = True  # L_sup^SAM on Y_f (eq. 2)
    use_consistency: bool = True  # L_c between teacher and student (2.2)
    uncertainty_aware: bool = False  # UA-MT (Yu et al. 2019): L_c only where the teacher is certain
    ema_alpha: float = EMA_ALPHA
    consistency_perturbations: int = CONSISTENCY_PERTURBATIONS  # J
    nt_dice_gamma: float = NT_DICE_GAMMA
    nt_dice_eps: float = NT_DICE_EPS
    uamt_passes: int = UAMT_PASSES  # stochastic teacher passes for UA-MT's uncertainty

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
        self.campaign: Campaign | None = None
        self._resumed_from_checkpoint = False
        self._pl_failures = 0  # failed pseudo-label rounds in a row, kept across a resume
        self._sam_target_trusted = True  # FMABS_LAMBDA_SAM_SCHEDULE=guarded: hold lambda_sam (set per round)
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
        self._open_campaign()
        self._run_due_events()
        super().on_train_start()

    def _open_campaign(self) -> None:
        """The run's campaign: claim (or check) the output folder, open the pool and plan the rounds."""
        folder, log = self.fmabs_folder, self.print_to_log_file
        checkpoints = [Path(self.output_folder) / f"checkpoint_{n}.pth" for n in ("latest", "final", "best")]
        source = nnunet_case_source(self)
        if self.use_sam_loss and self.settings.pl_source == "ground_truth" and source.has_ignore_label:
            raise ValueError("FMABS_PL_SOURCE=ground_truth trains on the dense truth, but this dataset declares an "
                             "ignore label (it is barely labeled): use generalist or teacher")
        Campaign.claim_folder(folder, self.settings, self.__class__.__name__, where=str(self.output_folder),
                              resuming=self._resumed_from_checkpoint,
                              checkpoint_exists=any(p.is_file() for p in checkpoints))
        command = resume_command(f"nnUNetv2_train {self.plans_manager.dataset_name} {self.configuration_name} "
                                 f"{self.fold} -tr {self.__class__.__name__} -p {self.plans_manager.plans_name} "
                                 f"-device {self.device.type} --c")
        expert = make_expert(self.settings, source.has_ignore_label, folder / "queries", command,
                             self.dataset_json["file_ending"], log=log)
        self.campaign = rank_zero_first(lambda: Campaign.open(  # under DDP rank 0 creates the run's files
            folder, self.settings, source, active_rounds=self.active_rounds, use_sam_loss=self.use_sam_loss,
            iterations_per_epoch=self.num_iterations_per_epoch, epochs=self.num_epochs, expert=expert,
            predict=SlidingWindow(self), sampler=self.sampler, fusion=self.fusion, log=log, save=self._save_now,
            generalist_factory=partial(generalist_from_settings, self.settings, self.device, folder, log)))
        self.campaign.pl_failures = self._pl_failures
        log(self.campaign.describe())
        if self.use_sam_loss and self.settings.pl_source != "generalist":
            log(f"FM-ABS ABLATION FMABS_PL_SOURCE={self.settings.pl_source}: Y_f is the "
                + ("teacher's own mask (no generalist)" if self.settings.pl_source == "teacher"
                   else "dense ground truth (a perfect generalist)"))
        elif self.use_sam_loss:
            log(f"FM-ABS {self.settings.recipe().describe()}; training grid spacing "
                f"{list(self.configuration_manager.spacing)} mm; fusion {self.fusion}")
        if self.use_sam_loss:
            log(f"FM-ABS L_sup^SAM weight: lambda_sam {self.settings.lambda_sam_schedule} ("
                + LAMBDA_SAM_DESCRIPTIONS[self.settings.lambda_sam_schedule] + ")")

    @property
    def pool(self):
        return self.campaign.pool

    @property
    def pl_store(self):
        return self.campaign.pl_store

    def _run_due_events(self) -> bool:
        """The campaign's rounds due at this epoch's start (DDP: campaign.distributed); True: new batches."""
        self.iteration = self.current_epoch * self.num_iterations_per_epoch
        changed = run_due_distributed(self.campaign, self.iteration, self._student(), self.teacher)
        rounds = self.pl_store.rounds if self.use_sam_loss else []
        trusted = sam_target_trusted(rounds[-1] if rounds else None)
        if self.settings.lambda_sam_schedule == "guarded" and trusted != self._sam_target_trusted:
            self.print_to_log_file(
                f"FM-ABS lambda_sam guarded: from iteration {self.iteration} " + (
                    "held at 0.5 (L_sup^SAM's target is the expert's planes or a Y_f at least as good as the teacher "
                    "on them)" if trusted else
                    "eq. 3's decay (the latest Y_f agrees less with the expert's planes than the teacher)"))
        self._sam_target_trusted = trusted
        return changed

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
        """Two streams (B cross-labeled + B unlabeled patches, Y_f as an extra label channel) and validation."""
        pseudo_dir = self.pl_store.latest_dir
        return fmabs_dataloaders(self, self.campaign.label_sources(),
                                 str(pseudo_dir) if pseudo_dir is not None else None)

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
            logits = self.network(data).float()
        consistency = (lambda probs: self._consistency(data, probs, t)) if self.use_consistency else None
        loss, terms = fmabs_loss(logits, target, n_lab, ignore, t, t_max, use_sam_loss=self.use_sam_loss,
                                 consistency=consistency, gamma=self.nt_dice_gamma, eps=self.nt_dice_eps,
                                 lambda_sam_schedule=self.settings.lambda_sam_schedule,
                                 sam_target_trusted=self._sam_target_trusted)
        self._step(loss)
        if self.teacher is not None:
            ema_update(self.teacher, self._student(), alpha=self.ema_alpha)
        self.iteration += 1
        kill_point("mid_epoch")
        out = {"loss": loss.detach().cpu().numpy()}
        out.update({k: float(v) for k, v in terms.items()})
        return out

    def _consistency(self, data: torch.Tensor, student_probs: torch.Tensor, t: int) -> torch.Tensor:
        """L_c: MAE between softmax(teacher(X + xi_j)) and softmax(student(X)), j = 1..J (2.2).
        Only the teacher's side runs without gradients; the loss itself reaches the student."""
        if not self.uncertainty_aware:
            return consistency_loss(student_probs, self._teacher_passes(data, self.consistency_perturbations))
        return uncertainty_aware_consistency(student_probs, self._teacher_passes(data, self.uamt_passes), t,
                                             self.t_max)

    def _teacher_passes(self, data: torch.Tensor, n: int) -> list[torch.Tensor]:
        """softmax(teacher(X + xi_j)), j = 1..n, in one batched teacher call (losses.teacher_probabilities)."""
        return teacher_probabilities(self.teacher, data, n, autocast=self._autocast)

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        for key in LOSS_TERMS:
            values = [o[key] for o in train_outputs if key in o]
            value = float(np.mean(values)) if values else 0.0
            self.logger.log(key, value, self.current_epoch)
        self.print_to_log_file(", ".join(
            f"{k} {self.logger.get_value(k, step=-1):.4f}" for k in LOSS_TERMS))
        for key, value in self.campaign.run_metrics().items():
            self.logger.log(key, value, self.current_epoch)

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank == 0:
            from nnunet_fmabs.trainers.plots import plot_loss_terms

            plot_loss_terms(self.logger.local_logger.my_fantastic_logging, LOSS_TERMS,
                            self.fmabs_folder / "loss_terms.png", log=self.print_to_log_file)

    def on_train_end(self):
        self.campaign.active_learning_curve(self.t_max, self._student())
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
            "pl_failures": self.campaign.pl_failures if self.campaign is not None else self._pl_failures,
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
        self._pl_failures = int(ours.get("pl_failures", 0))
        self._resumed_from_checkpoint = True
