"""Active-learning samplers of FM-ABS (paper section 2.3) behind a registry.

Built-ins: "random", "LC", "HE", "HER". Third-party samplers plug in through the entry-point
group ``nnunet_fmabs.samplers``.
"""
from nnunet_fmabs.samplers.registry import (
    ENTRY_POINT_GROUP,
    available_samplers,
    get_sampler,
    register_sampler,
)
from nnunet_fmabs.samplers.active import (
    HERSampler,
    HESampler,
    LCSampler,
    RandomSampler,
    Sampler,
    random_order,
    select_cases,
)
from nnunet_fmabs.samplers.scores import (
    entropy_ratio_score,
    entropy_score,
    least_confidence_score,
    normalized_entropy,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "HERSampler",
    "HESampler",
    "LCSampler",
    "RandomSampler",
    "Sampler",
    "available_samplers",
    "entropy_ratio_score",
    "entropy_score",
    "get_sampler",
    "least_confidence_score",
    "normalized_entropy",
    "register_sampler",
    "random_order",
    "select_cases",
]
