"""SAM 2 / SAM 2.1 (Ravi et al. 2024) and MedSAM2 (Ma et al. 2025) in 2D image mode, from ``sam2``.

SAM 2: exactly what ``SAM2ImagePredictor`` does for one image, each slice its own image: the 8-bit
slice as RGB through ``SAM2Transforms`` (resize to S x S, [0, 1], ImageNet mean/std); the Hiera
encoder and FPN neck (``forward_image``), the decoder's high-resolution features (conv_s0, conv_s1)
and ``no_mem_embed`` added to the lowest-resolution map; the box as two corner points (labels 2
and 3) before the other points, through the prompt encoder; the mask decoder of ``build_sam2``
(single mask, falling back to the best multimask output when unstable); logits resized bilinearly
to the slice, threshold 0. The three feature levels of a slice are one flat row of the engine
(one cache entry): (32, S/4, S/4), (64, S/8, S/8), (256, S/16, S/16).

MedSAM2: SAM 2.1 Hiera-T fine-tuned on 3D medical images at S = 512 (its ``sam2.1_hiera_t512``
config: image size 512, memory-attention RoPE at 32 x 32); its own preprocessing (PIL bilinear
resize of the 8-bit RGB slice, / 255, ImageNet mean/std) and box prompts only, as it was trained.

``sam2`` is an optional extra (``pip install "nnunet-fmabs[sam2]"``): it brings hydra-core and
iopath, and its PyPI release is a source package (see the README).
"""
from __future__ import annotations

import warnings
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Generalist
from .registry import register_generalist

SAM2_EXTRA = '"nnunet-fmabs[sam2]"'
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class SAM2Family(Generalist):
    """A SAM 2 architecture (hydra config of the ``sam2`` package) used as ``SAM2ImagePredictor`` does."""

    requires = (("sam2", SAM2_EXTRA), ("hydra", SAM2_EXTRA))
    config: ClassVar[str] = "configs/sam2.1/sam2.1_hiera_t.yaml"
    overrides: ClassVar[tuple[str, ...]] = ()
    image_size = 1024
    preprocessing = "sam2-v1: uint8 p0.5-99.5 as RGB; SAM2Transforms (torchvision resize SxS, /255, ImageNet mean/std)"

    @classmethod
    def build(cls) -> nn.Module:
        from sam2.build_sam import build_sam2

        # apply_postprocessing=True: the dynamic multimask fallback SAM2ImagePredictor users get
        return build_sam2(cls.config, ckpt_path=None, device="cpu", mode="eval",
                          hydra_overrides_extra=list(cls.overrides))

    # -- geometry: every slice is resized to S x S, prompts normalised by the slice size ----------
    def resized_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return self.image_size, self.image_size

    def transform_points(self, points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        height, width = shape
        return np.asarray(points, dtype=np.float64) / np.array([width, height]) * self.image_size

    @cached_property
    def _transforms(self):
        from sam2.utils.transforms import SAM2Transforms

        with warnings.catch_warnings():  # its torch.jit.script is deprecated in recent torch
            warnings.simplefilter("ignore", FutureWarning)
            return SAM2Transforms(resolution=self.image_size, mask_threshold=0.0)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self._transforms(np.repeat(image[:, :, None], 3, axis=2))

    def postprocess(self, logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits.float(), shape, mode="bilinear", align_corners=False)[:, 0] > 0.0

    # -- encoder and decoder ---------------------------------------------------------------------
    def _levels(self) -> list[tuple[int, int, int]]:
        """(channels, h, w) of the three feature levels, high resolution first."""
        s, decoder = self.image_size, self.model.sam_mask_decoder
        return [(decoder.conv_s0.out_channels, s // 4, s // 4), (decoder.conv_s1.out_channels, s // 8, s // 8),
                (self.model.hidden_dim, s // 16, s // 16)]

    def image_features(self, batch: torch.Tensor) -> torch.Tensor:
        model = self.model
        _, vision_feats, _, _ = model._prepare_backbone_features(model.forward_image(batch))
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        return torch.cat([feat.permute(1, 2, 0).reshape(batch.shape[0], -1) for feat in vision_feats], dim=1)

    def _unpack(self, embeddings: torch.Tensor) -> list[torch.Tensor]:
        levels, start = [], 0
        for channels, h, w in self._levels():
            levels.append(embeddings[:, start:start + channels * h * w].reshape(-1, channels, h, w))
            start += channels * h * w
        if start != embeddings.shape[1]:
            raise ValueError(f"{self.name}: embeddings of {embeddings.shape[1]} values, expected {start}")
        return levels

    def decode(self, embeddings: torch.Tensor, boxes: torch.Tensor,
               points: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        coords = boxes.reshape(-1, 2, 2)
        labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(len(boxes), 1)
        if points is not None:
            coords, labels = torch.cat([coords, points[0]], dim=1), torch.cat([labels, points[1]], dim=1)
        sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        feat_s0, feat_s1, image_embed = self._unpack(embeddings)
        with self._autocast():
            low_res, iou, _, _ = model.sam_mask_decoder(
                image_embeddings=image_embed, image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
                repeat_image=False, high_res_features=[feat_s0, feat_s1])
        return low_res, iou[:, 0]


# -- SAM 2 (07/2024) and SAM 2.1 (09/2024), the sizes of their hydra configs -------------------------------
@register_generalist("sam2_hiera_tiny")
class SAM2HieraTiny(SAM2Family): weights_name, config = "sam2_hiera_tiny", "configs/sam2/sam2_hiera_t.yaml"

@register_generalist("sam2_hiera_small")
class SAM2HieraSmall(SAM2Family): weights_name, config = "sam2_hiera_small", "configs/sam2/sam2_hiera_s.yaml"

@register_generalist("sam2_hiera_base_plus")
class SAM2HieraBasePlus(SAM2Family): weights_name, config = "sam2_hiera_base_plus", "configs/sam2/sam2_hiera_b+.yaml"

@register_generalist("sam2_hiera_large")
class SAM2HieraLarge(SAM2Family): weights_name, config = "sam2_hiera_large", "configs/sam2/sam2_hiera_l.yaml"

@register_generalist("sam2.1_hiera_tiny")
class SAM21HieraTiny(SAM2Family): weights_name, config = "sam2.1_hiera_tiny", "configs/sam2.1/sam2.1_hiera_t.yaml"

@register_generalist("sam2.1_hiera_small")
class SAM21HieraSmall(SAM2Family): weights_name, config = "sam2.1_hiera_small", "configs/sam2.1/sam2.1_hiera_s.yaml"

@register_generalist("sam2.1_hiera_base_plus")
class SAM21HieraBasePlus(SAM2Family): weights_name, config = "sam2.1_hiera_base_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml"

@register_generalist("sam2.1_hiera_large")
class SAM21HieraLarge(SAM2Family): weights_name, config = "sam2.1_hiera_large", "configs/sam2.1/sam2.1_hiera_l.yaml"


@register_generalist("medsam2")
class MedSAM2(SAM2Family):
    """MedSAM2: SAM 2.1 Hiera-T fine-tuned on 3D medical images and videos, at 512 px, box prompts."""

    weights_name = "medsam2"
    config = "configs/sam2.1/sam2.1_hiera_t.yaml"
    overrides = ("++model.image_size=512",
                 "++model.memory_attention.layer.self_attention.feat_sizes=[32,32]",
                 "++model.memory_attention.layer.cross_attention.feat_sizes=[32,32]")
    image_size = 512
    uses_points = False
    preprocessing = "medsam2-v1: uint8 p0.5-99.5 as RGB; PIL bilinear 512x512; /255; ImageNet mean/std"

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        from PIL import Image

        rgb = Image.fromarray(image).convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
        x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255.0
        return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
