"""MobileSAM (Zhang et al. 2023): TinyViT encoder distilled from SAM ViT-H, the paper's generalist.

Preprocessed as ``mobile_sam.SamPredictor`` does (1024 px, 0-255 scale, ImageNet mean/std).
``mobile_sam.build_sam_vit_t`` calls ``.eval()`` before loading its checkpoint, which freezes
TinyViT's cached attention biases at their initial values; here the architecture is built by
that function without a checkpoint and :func:`frozen_model` loads first, then calls ``.eval()``.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .registry import register_generalist
from .sam import SegmentAnythingFamily


@register_generalist("mobilesam")
class MobileSAM(SegmentAnythingFamily):
    package = "mobile_sam"
    weights_name = "mobilesam"
    requires = (("mobile_sam", "mobilesam-mirror"), ("timm", "timm"))
    preprocessing = "mobilesam-v1: " + SegmentAnythingFamily.preprocessing.split(": ", 1)[1]
    measured_dtypes: dict[str, torch.dtype] = {}

    @classmethod
    def build(cls) -> nn.Module:
        with warnings.catch_warnings():  # timm deprecation and registry-overwrite notes
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            from mobile_sam import build_sam_vit_t
        return build_sam_vit_t(checkpoint=None)
