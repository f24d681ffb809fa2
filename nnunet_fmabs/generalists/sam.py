"""SAM ViT-B/L/H (Kirillov et al. 2023) and MedSAM (Ma et al. 2024), from ``segment_anything``.

SAM: exactly what ``SamPredictor`` does, using the package's own ``ResizeLongestSide``: the
8-bit slice as RGB, longest side to 1024 (PIL bilinear), ImageNet mean/std on the 0-255 scale,
zero padding bottom/right; prompts scaled by the same transform; logits upscaled to 1024,
cropped, resized to the slice, threshold 0.

MedSAM: SAM ViT-B fine-tuned with box prompts; its ``MedSAM_Inference.py`` recipe: the RGB
slice resized to 1024 x 1024 (bicubic, anti-aliased, skimage), min-max to [0, 1], no mean/std;
box times 1024 / (W, H); sigmoid of the logits resized bilinearly to the slice, threshold 0.5.
Points are ignored by default (box prompt only, as MedSAM was fine-tuned).
"""
from __future__ import annotations

import importlib
import warnings
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Generalist
from .registry import register_generalist

SIZE = 1024


class SegmentAnythingFamily(Generalist):
    """A SAM-architecture model preprocessed as ``SamPredictor`` does (``package``'s own transform)."""

    package: ClassVar[str] = "segment_anything"
    requires = (("segment_anything", "segment-anything"),)
    image_size = SIZE
    preprocessing = "sam-v1: uint8 p0.5-99.5 as RGB; ResizeLongestSide 1024 (PIL); ImageNet mean/std 0-255; pad br"
    #: encoder (embed_dim, depth, num_heads, global_attn_indexes), as segment_anything's builders
    encoder: ClassVar[tuple[int, int, int, tuple[int, ...]]] = (768, 12, 12, (2, 5, 8, 11))

    @classmethod
    def build(cls) -> nn.Module:
        from segment_anything.build_sam import _build_sam

        embed_dim, depth, heads, global_attention = cls.encoder
        return _build_sam(embed_dim, depth, heads, list(global_attention), checkpoint=None)

    def _resizer(self):
        transforms = importlib.import_module(f"{self.package}.utils.transforms")
        return transforms.ResizeLongestSide(SIZE)

    def resized_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return self._resizer().get_preprocess_shape(shape[0], shape[1], SIZE)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        rgb = self._resizer().apply_image(np.repeat(image[:, :, None], 3, axis=2))
        x = torch.as_tensor(rgb).permute(2, 0, 1).float()
        mean, std = self.model.pixel_mean.cpu(), self.model.pixel_std.cpu()
        x = (x - mean) / std
        return F.pad(x, (0, SIZE - x.shape[2], 0, SIZE - x.shape[1]))

    def transform_points(self, points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return self._resizer().apply_coords(np.asarray(points, dtype=np.float64), shape)

    def postprocess(self, logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        masks = self.model.postprocess_masks(logits, self.resized_shape(shape), shape)
        return masks[:, 0] > self.model.mask_threshold


@register_generalist("sam_vit_b")
class SamViTB(SegmentAnythingFamily):
    weights_name = "sam_vit_b"
    encoder = (768, 12, 12, (2, 5, 8, 11))


@register_generalist("sam_vit_l")
class SamViTL(SegmentAnythingFamily):
    weights_name = "sam_vit_l"
    encoder = (1024, 24, 16, (5, 11, 17, 23))


@register_generalist("sam_vit_h")
class SamViTH(SegmentAnythingFamily):
    weights_name = "sam_vit_h"
    encoder = (1280, 32, 16, (7, 15, 23, 31))


@register_generalist("medsam")
class MedSAM(SamViTB):
    """MedSAM: SAM ViT-B weights fine-tuned on medical images with box prompts (points ignored)."""

    weights_name = "medsam"
    requires = (("segment_anything", "segment-anything"), ("skimage", "scikit-image"))
    uses_points = False
    preprocessing = "medsam-v1: uint8 p0.5-99.5 as RGB; skimage resize 1024x1024 order 3 aa, uint8; minmax [0,1]"

    def resized_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return SIZE, SIZE

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        from skimage import transform

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            resized = transform.resize(np.repeat(image[:, :, None], 3, axis=2), (SIZE, SIZE), order=3,
                                       preserve_range=True, anti_aliasing=True).astype(np.uint8)
        normalized = (resized - resized.min()) / np.clip(resized.max() - resized.min(), 1e-8, None)
        return torch.from_numpy(normalized).float().permute(2, 0, 1).contiguous()

    def transform_points(self, points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        height, width = shape
        return np.asarray(points, dtype=np.float64) / np.array([width, height]) * SIZE

    def postprocess(self, logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        probabilities = F.interpolate(torch.sigmoid(logits), size=shape, mode="bilinear", align_corners=False)
        return probabilities[:, 0] > 0.5
