"""Experts who answer queries with three orthogonal label slices per scan (2.3, cross-labeling).

Two kinds: the simulated expert reads the dense ground truth that a simulation has (nnU-Net's
preprocessed seg of the queried scan, and only of that scan), and the human expert
(:mod:`nnunet_fmabs.annotation.human`) writes files for a person to correct and reads them back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

from nnunet_fmabs.annotation.pool import CrossAnnotation
from nnunet_fmabs.annotation.slices import select_slices
from nnunet_fmabs.registry import Registry

EXPERTS = Registry("expert", "nnunet_fmabs.experts")
"""FMABS_EXPERT names: ``simulated``, ``human`` and plugins' (entry-point group ``nnunet_fmabs.experts``).
A class there implements :class:`Expert` and ``for_run(context: ExpertContext)``."""


@dataclass(frozen=True)
class ExpertContext:
    """What a run tells its expert when it builds one (:meth:`for_run`)."""

    settings: object  # the run's RunSettings
    queries_root: Path  # where a person's files go (round_NN/ folders)
    resume_command: str  # the command that continues the run
    file_ending: str = ".nii.gz"  # the dataset's image file ending
    log: Callable[[str], None] = print


@dataclass
class ScanAccess:
    """What an expert may look at for a queried scan, in nnU-Net's preprocessed space.

    ``dense_label`` is only set in simulation; the trainer calls it for queried scans only.
    """

    shape: Callable[[str], tuple[int, int, int]]
    properties: Callable[[str], dict]
    dense_label: Callable[[str], np.ndarray] | None = None
    prediction: Callable[[str], np.ndarray | None] = lambda case: None
    raw_image: Callable[[str], Path | None] = lambda case: None
    transpose_forward: Sequence[int] = (0, 1, 2)
    max_label: int = 1
    label_names: Mapping[str, int] = field(default_factory=dict)  # dataset.json "labels" (name -> value)
    extra: dict = field(default_factory=dict)


class Expert(Protocol):
    name: str

    def propose_slices(self, case: str, access: ScanAccess) -> tuple[int, int, int]:
        """The three slice indices (preprocessed array axes 0, 1, 2) to label for ``case``."""

    def answer(self, round_entry: dict, access: ScanAccess) -> dict[str, CrossAnnotation] | None:
        """Labels for every scan of a pending round, or None while a person is still at work."""


@EXPERTS.register("simulated")
class SimulatedExpert:
    """Labels the three slices from the dense ground truth (the authors' simulation, 2.3)."""

    name = "simulated"

    def __init__(self, rule: str = "bbox_middle"):
        self.rule = rule

    @classmethod
    def for_run(cls, context: ExpertContext) -> "SimulatedExpert":
        return cls(context.settings.slice_rule)

    def propose_slices(self, case: str, access: ScanAccess) -> tuple[int, int, int]:
        return select_slices(self._dense(case, access), rule=self.rule)

    def answer(self, round_entry: dict, access: ScanAccess) -> dict[str, CrossAnnotation]:
        return {c: CrossAnnotation.from_dense(self._dense(c, access), round_entry["slices"][c])
                for c in round_entry["cases"]}

    @staticmethod
    def _dense(case: str, access: ScanAccess) -> np.ndarray:
        if access.dense_label is None:
            raise RuntimeError("the simulated expert needs dense labels; this dataset has none "
                               "(set FMABS_EXPERT=human)")
        seg = np.asarray(access.dense_label(case))
        seg = seg[0] if seg.ndim == 4 else seg
        # nnU-Net marks voxels outside the nonzero crop with -1: they are background to an expert
        return np.where(seg < 0, 0, seg)
