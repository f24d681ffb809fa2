"""What every trainer of ours shares with nnU-Net's: the paper's schedule, atomic checkpoints, AMP."""
from __future__ import annotations

import contextlib
import math
import os

import torch

from nnunet_fmabs import atomic
from nnunet_fmabs.faults import kill_point
from nnunet_fmabs.settings import RunSettings

PAPER_ITERATIONS = 20_000  # t_max (section 3)
PAPER_ITERATIONS_PER_EPOCH = 250  # nnU-Net's epoch length: 80 epochs make the paper's 20,000
PAPER_LR = 0.01  # SGD, poly decay 0.9 (nnU-Net's PolyLRScheduler)


class PaperScheduleMixin:
    """t_max = 20,000 iterations, SGD lr 0.01 with poly 0.9, shrinkable through FMABS_EPOCHS and
    FMABS_ITERATIONS_PER_EPOCH for quick runs."""

    total_iterations: int = PAPER_ITERATIONS

    def _apply_paper_schedule(self, settings: RunSettings) -> None:
        self._limit_cpu_threads()
        self._tta = bool(settings.tta)
        self.initial_lr = PAPER_LR
        self.num_iterations_per_epoch = settings.iterations_per_epoch or PAPER_ITERATIONS_PER_EPOCH
        self.num_epochs = settings.epochs or math.ceil(self.total_iterations / self.num_iterations_per_epoch)
        if settings.val_iterations:
            self.num_val_iterations_per_epoch = settings.val_iterations
        if settings.epochs and settings.epochs < 50:
            self.save_every = 1  # tiny runs: a checkpoint per epoch, so --c loses nothing

    def _limit_cpu_threads(self) -> None:
        """``FMABS_CPU_THREADS=n``: torch threads on CPU (``nnUNetv2_train -device cpu`` takes every core).
        Two jobs on one machine then share it without their OpenMP threads spinning against each other."""
        value = os.environ.get("FMABS_CPU_THREADS", "").strip()
        if not value or self.device.type != "cpu":
            return
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"FMABS_CPU_THREADS={value!r}: expected a positive number of threads")
        torch.set_num_threads(n)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self._tta:  # FMABS_TTA=0: predictions without mirroring (8x cheaper in 3D)
            self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, mirror_axes

    @property
    def t_max(self) -> int:
        """The run's total iterations (t_max of lambda_sam, lambda_c and beta)."""
        return self.num_epochs * self.num_iterations_per_epoch


class AtomicCheckpointMixin:
    """nnU-Net's checkpoint written to a temporary file and renamed: a kill never leaves a torn one."""

    def _checkpoint_dict(self) -> dict:
        mod = self.network.module if self.is_ddp else self.network
        if isinstance(mod, torch._dynamo.eval_frame.OptimizedModule):
            mod = mod._orig_mod
        return {
            "network_weights": mod.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
        }

    def on_train_start(self):
        if self.local_rank == 0 and self.output_folder and os.path.isdir(self.output_folder):
            for tmp in atomic.remove_stale_temporaries(self.output_folder):
                self.print_to_log_file(f"removed {tmp.name}, left by a process that was killed while writing")
        super().on_train_start()

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = self._checkpoint_dict()

        def write(tmp):
            torch.save(checkpoint, tmp)
            kill_point("checkpoint_write")

        atomic.write_with(filename, write)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if isinstance(filename_or_checkpoint, (str, os.PathLike)):
            stored = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)
            name = stored.get("trainer_name")
            if name is not None and name != self.__class__.__name__:
                raise RuntimeError(
                    f"{filename_or_checkpoint} was written by trainer {name}, not {self.__class__.__name__}: "
                    "this run folder belongs to another trainer. Pass the matching -tr, or start a new run."
                )
        super().load_checkpoint(filename_or_checkpoint)


class MixedPrecisionMixin:
    """Mixed precision as nnU-Net's: autocast only on CUDA (fp32 on CPU); bf16 where the GPU supports it
    (no loss scaling needed), else fp16 with nnU-Net's GradScaler."""

    @property
    def amp_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    @property
    def _scaled_gradients(self) -> bool:
        return self.grad_scaler is not None and self.amp_dtype == torch.float16

    def _autocast(self):
        dtype = self.amp_dtype
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def _step(self, loss: torch.Tensor, clip: float = 12.0) -> None:
        """backward, clip the gradient norm at ``clip`` (nnU-Net's 12), optimizer step; through the GradScaler
        for fp16."""
        if self._scaled_gradients:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), clip)
            self.optimizer.step()
