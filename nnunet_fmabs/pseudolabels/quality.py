"""Pseudo-label quality without ground truth: the expert's own planes as the yardstick (issue 12).

In a real (human) run nothing tells whether the generalist's Y_f is better than the teacher mask
P^t that prompted it, except the three planes the expert labeled on each queried scan. Each
pseudo-label round compares, on those voxels only, Y_f before the expert's labels are put back and
P^t with the expert's labels (pooled Dice over the round's labeled scans), and the round guard uses
it: a round whose Y_f agrees with the expert clearly less than the teacher does is not trained on
(its pseudo labels become "unknown" outside the expert's planes), so that a bad generalist round
cannot drag the student below what the teacher already knows.

The teacher has been trained on exactly these planes, so its agreement there is optimistic: the
guard's margin (``FMABS_PL_GUARD_MARGIN``) absorbs that; benchmarks/pseudolabel_quality.py measures
how the planes' verdict tracks the 3D truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

PLANES_FIELDS = ("yf_overlap", "yf_total", "teacher_overlap", "teacher_total", "voxels")


def plane_overlap(mask: ArrayLike, cross_label: ArrayLike, ignore_value: int) -> tuple[int, int]:
    """(2 |M & E|, |M| + |E|) over the expert's labeled voxels (cross_label not ignore, >= 0), where M is
    ``mask`` (foreground != 0) and E the expert's foreground (label > 0). Dice = first / second."""
    m = np.asarray(mask) != 0
    cross = np.asarray(cross_label)
    if m.shape != cross.shape:
        raise ValueError(f"mask {m.shape} and cross label {cross.shape} differ in shape")
    labeled = (cross != ignore_value) & (cross >= 0)
    expert = labeled & (cross > 0)
    mine = labeled & m
    return 2 * int(np.count_nonzero(mine & expert)), int(np.count_nonzero(mine) + np.count_nonzero(expert))


@dataclass
class PlaneAgreement:
    """Pooled agreement of Y_f and of the teacher with the expert's planes, over one round's scans."""

    yf_overlap: int = 0
    yf_total: int = 0
    teacher_overlap: int = 0
    teacher_total: int = 0
    voxels: int = 0  # labeled voxels compared

    @classmethod
    def of_case(cls, fused: ArrayLike, teacher: ArrayLike, cross_label: ArrayLike, ignore_value: int
                ) -> "PlaneAgreement":
        yf = plane_overlap(fused, cross_label, ignore_value)
        t = plane_overlap(teacher, cross_label, ignore_value)
        cross = np.asarray(cross_label)
        return cls(*yf, *t, int(np.count_nonzero((cross != ignore_value) & (cross >= 0))))

    def __add__(self, other: "PlaneAgreement") -> "PlaneAgreement":
        return PlaneAgreement(*(getattr(self, f) + getattr(other, f) for f in PLANES_FIELDS))

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, f) for f in PLANES_FIELDS], dtype=np.int64)

    @classmethod
    def from_array(cls, values: ArrayLike) -> "PlaneAgreement":
        return cls(*(int(v) for v in np.asarray(values).reshape(len(PLANES_FIELDS))))

    @property
    def dice_yf(self) -> float:
        return _dice(self.yf_overlap, self.yf_total)

    @property
    def dice_teacher(self) -> float:
        return _dice(self.teacher_overlap, self.teacher_total)


def _dice(overlap: int, total: int) -> float:
    return float("nan") if total == 0 else overlap / total


def round_accepted(agreement: PlaneAgreement, margin: float) -> bool:
    """The round guard: train on this round's Y_f unless, on the expert's planes, its Dice is more than
    ``margin`` below the teacher's. Without expert planes (no labeled voxels) the round is accepted."""
    if agreement.voxels == 0 or agreement.yf_total == 0 or agreement.teacher_total == 0:
        return True
    return agreement.dice_yf >= agreement.dice_teacher - margin


def sam_target_trusted(last_round: dict | None) -> bool:
    """Whether L_sup^SAM's target after ``last_round`` (a committed round's summary; None before the first) may
    keep its full weight under ``FMABS_LAMBDA_SAM_SCHEDULE=guarded``: yes before any round, after a round the guard
    rejected (the target is then the expert's planes alone), and after one whose Y_f agrees with the expert's
    planes at least as well as the teacher does (or that had no planes to compare on); no when its Y_f, trained
    on, agrees less than the teacher: eq. 3's decay then protects the student from it (section 2.2)."""
    if not last_round or not last_round.get("accepted", True):
        return True
    yf, teacher = last_round.get("planes_dice_yf", np.nan), last_round.get("planes_dice_teacher", np.nan)
    if yf is None or teacher is None or np.isnan(yf) or np.isnan(teacher):
        return True
    return float(yf) >= float(teacher)
