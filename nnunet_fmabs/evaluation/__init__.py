"""Segmentation metrics of the paper's Table 1: Dice, Jaccard, 95HD, ASD (:mod:`.metrics`).

Names are resolved lazily, so importing this package loads neither medpy nor SimpleITK.
"""
from __future__ import annotations

import importlib

__all__ = ["case_metrics", "evaluate_folders", "format_table", "EvaluationError", "METRICS"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.metrics"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
