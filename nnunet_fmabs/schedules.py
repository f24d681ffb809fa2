"""Time-dependent weights of FM-ABS (paper sections 2.2 and 2.3).

All schedules share the Gaussian ramp-up of UA-MT [26], ``exp(-5 (1 - t/t_max)^2)``, which rises
from ``e^-5`` (about 0.0067) at ``t = 0`` to 1 at ``t = t_max``.
"""
from __future__ import annotations

import math

RAMPUP_STEEPNESS = 5.0
"""The 5 in exp(-5 (1 - t/t_max)^2)."""

LAMBDA_SAM_MAX = 0.5
"""Scale of lambda_sam(t) (eq. 3): weight of L_sup^SAM, decays from about 0.497 to 0."""

LAMBDA_C_MAX = 0.1
"""Scale of lambda_c(t) (eq. 3): weight of L_c, grows from about 0.0007 to 0.1."""

HER_BETA_START = 0.5
"""beta(0) of HER sampling (section 2.3): normalized-entropy threshold at the start."""

HER_BETA_END = 0.75
"""beta(t_max) of HER sampling (section 2.3): normalized-entropy threshold at the end."""


def gaussian_rampup(t: float, t_max: float) -> float:
    """Gaussian ramp-up exp(-5 (1 - t/t_max)^2), with t clipped to [0, t_max].

    Raises ValueError when t_max <= 0.
    """
    if not t_max > 0:
        raise ValueError(f"t_max must be > 0, got {t_max!r}")
    t = min(max(float(t), 0.0), float(t_max))
    phase = 1.0 - t / float(t_max)
    return math.exp(-RAMPUP_STEEPNESS * phase * phase)


LAMBDA_SAM_SCHEDULES = ("paper", "constant", "guarded")
"""FMABS_LAMBDA_SAM_SCHEDULE: ``paper``, eq. 3's decay to 0; ``constant``, 0.5 throughout;
``guarded``, 0.5 while L_sup^SAM's target is trusted and eq. 3 while it is not (the target is trusted before the
first pseudo-label round, after a round the guard rejected, whose target is then the expert's planes alone, and
after a round whose Y_f agrees with the expert's planes at least as well as the teacher does:
:func:`nnunet_fmabs.pseudolabels.quality.sam_target_trusted`). On the demo (benchmarks/README.md, "Demo") holding
the weight added 3-5 Dice with dense truth as Y_f and cost 6 at a seed where LiteMedSAM's Y_f, below the teacher,
passed the guard: the decay protects a run from a poor Y_f, which is what ``guarded`` keeps it for (measured on the
demo, seeds 0-2: it took that loss back and ended level with eq. 3, -0.1 Dice). On LA (CPU protocol) held dense truth
gained about 2 Dice (benchmarks/README.md, la_table1). ``guarded`` is the trainers' default since labeled scans' Y_f,
bounded by the expert's planes, is far above the teacher (demo and LA, with the guard at margin 0 or -0.03)."""


def lambda_sam(t: float, t_max: float, schedule: str = "paper", target_trusted: bool = True) -> float:
    """lambda_sam(t) = 0.5 (1 - exp(-5 (1 - t/t_max)^2)) (section 2.2, eq. 3); ``schedule="constant"``: 0.5;
    ``"guarded"``: 0.5 while ``target_trusted``, eq. 3 otherwise."""
    if schedule not in LAMBDA_SAM_SCHEDULES:
        raise ValueError(f"lambda_sam schedule {schedule!r}: use one of {', '.join(LAMBDA_SAM_SCHEDULES)}")
    decay = 1.0 - gaussian_rampup(t, t_max)
    held = schedule == "constant" or (schedule == "guarded" and target_trusted)
    return LAMBDA_SAM_MAX * (1.0 if held else decay)


def lambda_c(t: float, t_max: float) -> float:
    """lambda_c(t) = 0.1 exp(-5 (1 - t/t_max)^2) (section 2.2, eq. 3)."""
    return LAMBDA_C_MAX * gaussian_rampup(t, t_max)


def her_threshold(t: float, t_max: float) -> float:
    """beta(t) = 0.5 + 0.25 exp(-5 (1 - t/t_max)^2), the HER entropy threshold (section 2.3)."""
    return HER_BETA_START + (HER_BETA_END - HER_BETA_START) * gaussian_rampup(t, t_max)


def at_epoch_start(t: int, iterations_per_epoch: int, epochs: int) -> int:
    """The epoch start at which an event due at iteration ``t`` runs: rounds run before an epoch's
    first batch, so at the first epoch start >= t; one due after the last epoch start runs there
    (never dropped). Events that land on the same epoch start are one round."""
    last = max(0, (epochs - 1) * iterations_per_epoch)
    return min(last, -(-int(t) // iterations_per_epoch) * iterations_per_epoch)
