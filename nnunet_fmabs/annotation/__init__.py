"""Expert-model collaboration (2.3): which three slices, cross labels, the labeled pool, experts."""
from nnunet_fmabs.annotation.rounds import (K_PER_ROUND, WARMUP_FRACTION, budget_from_spec, round_iterations,
                                            round_sizes)
from nnunet_fmabs.annotation.slices import SLICE_RULES, cross_label, select_slices

__all__ = ["K_PER_ROUND", "WARMUP_FRACTION", "budget_from_spec", "round_iterations", "round_sizes",
           "SLICE_RULES", "cross_label", "select_slices"]
