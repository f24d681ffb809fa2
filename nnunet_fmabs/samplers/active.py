"""The built-in active samplers (random, LC, HE, HER; paper section 2.3) and the selection of
the K scans of a round."""
from __future__ import annotations

import abc
import math
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from nnunet_fmabs.samplers.registry import register_sampler
from nnunet_fmabs.samplers.scores import (
    entropy_ratio_score,
    entropy_score,
    least_confidence_score,
)
from nnunet_fmabs.schedules import her_threshold


class Sampler(abc.ABC):
    """Base of the samplers: scores one scan from the student's probabilities (C, *spatial).

    ``higher_is_better``: the K scans with the highest scores are queried (else the lowest).
    ``needs_probabilities``: whether ``score`` reads ``probs`` (the trainer may skip inference).
    ``is_random``: ``select_cases`` ignores the scores and draws uniformly (a campaign takes the next
    scans of one seeded order of the pool instead: ``Campaign.next_random_cases``).
    """

    name: str = ""
    higher_is_better: bool = True
    needs_probabilities: bool = True
    is_random: bool = False

    @abc.abstractmethod
    def score(self, probs: ArrayLike, t: float = 0, t_max: float = 1) -> float:
        """The scan's active score from its class probabilities (C, X, Y, Z) at iteration t."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@register_sampler("random")
class RandomSampler(Sampler):
    """Random: K scans drawn uniformly from the unlabeled pool; ``score`` is a constant 0."""

    name = "random"
    higher_is_better = True
    needs_probabilities = False
    is_random = True

    def score(self, probs: ArrayLike | None = None, t: float = 0, t_max: float = 1) -> float:
        return 0.0


@register_sampler("LC")
class LCSampler(Sampler):
    """LC, least confidence: query the scans with the lowest mean of the lowest quartile of
    confidences."""

    name = "LC"
    higher_is_better = False

    def score(self, probs: ArrayLike, t: float = 0, t_max: float = 1) -> float:
        return least_confidence_score(probs)


@register_sampler("HE")
class HESampler(Sampler):
    """HE, highest entropy: query the scans with the highest mean normalized entropy."""

    name = "HE"
    higher_is_better = True

    def score(self, probs: ArrayLike, t: float = 0, t_max: float = 1) -> float:
        return entropy_score(probs)


@register_sampler("HER")
class HERSampler(Sampler):
    """HER, highest entropy ratio: query the scans with the largest share of ne_v > beta(t),
    beta(t) = 0.5 + 0.25 exp(-5 (1 - t/t_max)^2)."""

    name = "HER"
    higher_is_better = True

    def score(self, probs: ArrayLike, t: float = 0, t_max: float = 1) -> float:
        return entropy_ratio_score(probs, her_threshold(t, t_max))


def random_order(ids: Sequence[str], rng: np.random.Generator) -> list[str]:
    """The sorted ``ids`` in one uniformly random order drawn with ``rng``: a random query of k scans takes
    its first k, so queries of different sizes from one seed are nested (common random numbers)."""
    candidates = sorted(ids)
    return [candidates[i] for i in rng.permutation(len(candidates))]


def select_cases(
    sampler: Any,
    scores: Mapping[str, float] | Sequence[str],
    k: int,
    rng: np.random.Generator,
) -> list[str]:
    """The case ids queried this round: K of the candidates (all of them when fewer than K).

    A random sampler (``is_random``) draws k ids uniformly with ``rng`` from the sorted candidate
    ids, the first k of :func:`random_order` (``scores`` may then be a plain list of ids). Any other
    sampler needs ``scores`` as a mapping id -> score and takes the k best (highest first if
    ``higher_is_better``, else lowest first), ties broken by case id. Raises ValueError for k <= 0,
    for a non-finite score (naming the sampler and the case) and for duplicate ids.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    sampler_name = getattr(sampler, "name", None) or type(sampler).__name__
    ids = list(scores.keys()) if isinstance(scores, Mapping) else list(scores)
    if len(set(ids)) != len(ids):
        raise ValueError(f"sampler {sampler_name!r}: duplicate case ids among the candidates")
    if getattr(sampler, "is_random", False):
        candidates = sorted(ids)
        if k >= len(candidates):
            return candidates
        return random_order(candidates, rng)[: int(k)]
    if not isinstance(scores, Mapping):
        raise ValueError(
            f"sampler {sampler_name!r} ranks cases by score: pass a mapping case id -> score"
        )
    values: dict[str, float] = {}
    for case_id, value in scores.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(
                f"sampler {sampler_name!r} gave a non-finite score {value!r} for case {case_id!r}"
            )
        values[case_id] = number
    sign = -1.0 if getattr(sampler, "higher_is_better", True) else 1.0
    ranked = sorted(values, key=lambda case_id: (sign * values[case_id], case_id))
    return ranked[: int(k)]
