"""The scans as a campaign sees them: preprocessed cases, their split and label facts (no trainer needed).

:class:`CaseSource` is all the campaign reads of a dataset; :func:`nnunet_case_source` builds it from an
nnU-Net trainer, and tests build it from arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from nnunet_fmabs.annotation.experts import ScanAccess


@dataclass
class CaseSource:
    """Preprocessed scans: ``load_case(case)`` returns nnU-Net's ``(data, seg, seg_prev, properties)``."""

    load_case: Callable[[str], tuple]
    training_cases: Sequence[str]
    validation_cases: Sequence[str]
    spacing: Sequence[float]  # the training grid's, mm per array axis
    ignore_value: int
    has_ignore_label: bool = False
    max_label: int = 1
    label_names: Mapping[str, int] = field(default_factory=dict)
    transpose_forward: Sequence[int] = (0, 1, 2)
    cache_prefix: tuple = ()  # names the scans in the generalist's embedding cache (dataset, configuration)
    raw_image: Callable[[str], Path | None] = lambda case: None

    def shape(self, case: str) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.load_case(case)[0].shape[1:])  # type: ignore[return-value]

    def dense_label(self, case: str) -> np.ndarray:
        return np.asarray(self.load_case(case)[1])

    def scans_labeled_by_the_dataset(self, cases: Sequence[str]) -> list[str]:
        """Scans of a barely labeled dataset (one that declares nnU-Net's ignore label) that carry labels."""
        if not self.has_ignore_label:
            return []
        labeled = []
        for case in cases:
            seg = np.asarray(self.load_case(case)[1][:])
            if np.any((seg >= 0) & (seg != self.ignore_value)):
                labeled.append(case)
        return labeled

    def access(self, predict_labels: Callable[[str], np.ndarray] | None) -> ScanAccess:
        """What an expert may look at (:class:`ScanAccess`); dense labels only where the dataset is dense."""
        return ScanAccess(shape=self.shape, properties=lambda case: self.load_case(case)[3],
                          dense_label=None if self.has_ignore_label else self.dense_label,
                          prediction=predict_labels or (lambda case: None), raw_image=self.raw_image,
                          transpose_forward=self.transpose_forward, max_label=self.max_label,
                          label_names=dict(self.label_names))


def nnunet_case_source(trainer) -> CaseSource:
    """The :class:`CaseSource` of an nnU-Net trainer after ``initialize()``: its split, plans and labels."""
    from nnunetv2.paths import nnUNet_raw

    lm = trainer.label_manager
    folder = trainer.preprocessed_dataset_folder

    def load_case(case):
        return trainer.dataset_class(folder, [case]).load_case(case)

    def raw_image(case):
        if not nnUNet_raw.is_set():
            return None
        p = Path(nnUNet_raw.get()) / trainer.plans_manager.dataset_name / "imagesTr" / \
            f"{case}_0000{trainer.dataset_json['file_ending']}"
        return p if p.is_file() else None

    tr_keys, val_keys = trainer.do_split()
    max_label = int(max(lm.all_labels))
    return CaseSource(
        load_case=load_case, training_cases=list(tr_keys), validation_cases=list(val_keys),
        spacing=list(trainer.configuration_manager.spacing), ignore_value=trainer.ignore_value,
        has_ignore_label=bool(lm.has_ignore_label), max_label=max_label,
        label_names={str(k): int(v) for k, v in trainer.dataset_json["labels"].items()
                     if isinstance(v, int) and 0 <= v <= max_label},
        transpose_forward=list(trainer.plans_manager.transpose_forward),
        cache_prefix=(trainer.plans_manager.dataset_name, trainer.configuration_name), raw_image=raw_image)


class SlidingWindow:
    """Class probabilities of one preprocessed scan by nnU-Net's sliding window (step 0.5, Gaussian weighting,
    no mirroring), for any network of the trainer's architecture (student or teacher)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self._predictor = None

    def __call__(self, network, data) -> np.ndarray:
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        tr = self.trainer
        if self._predictor is None:
            self._predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                              perform_everything_on_device=tr.device.type != "cpu",
                                              device=tr.device, verbose=False, verbose_preprocessing=False,
                                              allow_tqdm=False)
        self._predictor.manual_initialization(network, tr.plans_manager, tr.configuration_manager, None,
                                              tr.dataset_json, tr.__class__.__name__,
                                              tr.inference_allowed_mirroring_axes)
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                logits = self._predictor.predict_sliding_window_return_logits(
                    torch.from_numpy(np.asarray(data[:])).float())
        finally:
            network.train(was_training)
        return torch.softmax(logits.float(), 0).cpu().numpy()


def generalist_from_settings(settings, device, run_folder: Path, log: Callable[[str], None] = print):
    """FMABS_GENERALIST on ``device`` with the run's embedding cache (FMABS_EMBEDDING_CACHE: off, run =
    ``run_folder/embedding_cache``, or a folder shared between runs); the frozen generalist of 2.2."""
    from nnunet_fmabs.generalists import get_generalist

    options = {}
    if settings.generalist_dtype != "auto":
        options["dtype"] = settings.generalist_dtype
    if settings.generalist_batch_size:
        options["batch_size"] = settings.generalist_batch_size
    generalist = get_generalist(settings.generalist, checkpoint=settings.generalist_checkpoint or None,
                                device=str(device), **options)
    where = settings.embedding_cache
    if where != "off" and hasattr(generalist, "set_cache"):
        from nnunet_fmabs.generalists.cache import EmbeddingCache

        folder = Path(run_folder) / "embedding_cache" if where == "run" else Path(where)
        generalist.set_cache(EmbeddingCache(folder, max_bytes=int(settings.embedding_cache_gb * 2**30)))
    points = getattr(generalist, "use_points", True)
    log(f"generalist {generalist!r}: prompted with boxes"
        + (" and points" if points else " only (a box-only family: points are not passed)"))
    return generalist


def resume_command(fallback: str, argv: Sequence[str] | None = None) -> str:
    """The command that continues this run: the user's own ``nnUNetv2_train`` line plus ``--c`` (from
    ``argv``, default ``sys.argv``), else ``fallback`` (a run started from Python)."""
    import os
    import shlex
    import sys

    argv = list(sys.argv if argv is None else argv)
    if argv and os.path.basename(argv[0]).startswith("nnUNetv2_train"):
        return " ".join(shlex.quote(a) for a in ["nnUNetv2_train", *[a for a in argv[1:] if a != "--c"], "--c"])
    return fallback
