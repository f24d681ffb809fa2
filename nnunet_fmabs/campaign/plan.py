"""When a run's rounds happen: active rounds of K scans (2.3) and pseudo-label rounds (2.2), in iterations.

Rounds run at epoch starts (:func:`~nnunet_fmabs.schedules.at_epoch_start`), so the plan holds the
iterations they really run at.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from nnunet_fmabs.annotation.rounds import round_iterations, round_sizes
from nnunet_fmabs.schedules import at_epoch_start
from nnunet_fmabs.settings import RunSettings


@dataclass(frozen=True)
class CampaignPlan:
    """``rounds``: (scans, iteration) per active round, round 0 first; ``pseudo_label_rounds``: iterations."""

    rounds: list[tuple[int, int]]
    pseudo_label_rounds: list[int]

    @classmethod
    def make(cls, settings: RunSettings, budget: int, *, prelabeled: int, active_rounds: bool, use_sam_loss: bool,
             iterations_per_epoch: int, epochs: int) -> "CampaignPlan":
        """The dataset's own sparse labels are round 0 (K per round after that); without active rounds the
        whole budget comes at t = 0; otherwise the paper's K per round after a warm-up round."""
        k = settings.k
        if prelabeled:
            rest = budget - prelabeled
            sizes = [prelabeled] + [min(k, rest - i) for i in range(0, rest, k)]
        elif active_rounds:
            sizes = round_sizes(budget, k, settings.warmup_fraction)
        else:
            sizes = [budget]
        t_max = epochs * iterations_per_epoch
        start = partial(at_epoch_start, iterations_per_epoch=iterations_per_epoch, epochs=epochs)
        rounds = [(size, start(t)) for size, t in zip(sizes, round_iterations(len(sizes), t_max, settings.al_spread))]
        pl = sorted({start(int(round(float(f) * t_max))) for f in settings.pl_rounds.split(",") if f.strip()}) \
            if use_sam_loss else []
        return cls(rounds, pl)
