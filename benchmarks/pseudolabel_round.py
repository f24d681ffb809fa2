"""Time and peak memory of one pseudo-label round over N phantom scans (paper 2.2), N = 5, 10, 20.

What one round of the trainer does per scan, minus the teacher's sliding window: load the scan,
prompt the frozen generalist from a teacher mask on every slice with foreground in the three views
(the default prompt recipe), fuse the three view masks by MV into Y_f, write Y_f to disk
(compressed .npz, as the trainer's pseudo-label store). Scans are read one at a time from NIfTI
files, as the trainer loads one preprocessed case at a time.

The teacher mask is derived from the ground truth (eroded by one voxel, then shifted by one voxel
along x: a slightly wrong teacher), so no network is trained here; ``label_volume`` is the code the
trainer calls. Each N runs in a fresh subprocess: peak memory is that process's maximum resident
set size (``VmHWM`` in /proc/self/status, i.e. ``ru_maxrss``), reported beside the RSS right after the
generalist was loaded (before the round), so the round's own growth shows. Goal: flat in N.

The embedding cache (``--cache run``, the trainer's default) is a fresh on-disk folder per N;
``--cache off`` encodes every slice without writing embeddings.

    python benchmarks/pseudolabel_round.py                                   # LiteMedSAM, bf16
    python benchmarks/pseudolabel_round.py --generalist box_threshold        # cheap test generalist
    python benchmarks/pseudolabel_round.py --sizes 5 10 20 --shape 48 48 32
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    """Resident set size now (Linux: VmRSS)."""
    value = _status_mb("VmRSS")
    return float("nan") if value is None else value


def _peak_mb() -> float:
    """Peak resident set size of this process (Linux: VmHWM, the same count as VmRSS; else ru_maxrss)."""
    value = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if value is None else value


def _get_generalist(name: str, dtype: str, device: str):
    from nnunet_fmabs.generalists import get_generalist

    if name == "box_threshold":  # the tests' plugin, registered here instead of through an entry point
        sys.path.insert(0, str(REPO))
        from nnunet_fmabs.generalists.registry import GENERALISTS, register_generalist
        from tests.plugins.box_generalist import BoxThresholdGeneralist

        if name not in GENERALISTS:
            register_generalist(name)(BoxThresholdGeneralist)
    options = {} if dtype == "auto" else {"dtype": dtype}
    return get_generalist(name, device=device, **options)


def teacher_from_truth(gt):
    """A slightly wrong teacher mask: the ground truth eroded by one voxel and shifted one voxel along x."""
    import numpy as np
    from scipy import ndimage

    mask = ndimage.binary_erosion(gt.astype(bool), iterations=1)
    return np.roll(mask, 1, axis=0)


def child(args) -> int:
    """One round over the first N scans of the phantom in ``args.data``; prints one JSON line."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from nnunet_fmabs.pseudolabels.labeler import dice, label_volume

    torch.set_num_threads(args.threads or torch.get_num_threads())
    rss_start = _rss_mb()
    t0 = time.perf_counter()
    generalist = _get_generalist(args.generalist, args.dtype, args.device)
    work = Path(tempfile.mkdtemp(prefix="fmabs_plround_"))
    if args.cache == "run" and hasattr(generalist, "set_cache"):
        from nnunet_fmabs.generalists.cache import EmbeddingCache

        generalist.set_cache(EmbeddingCache(work / "embedding_cache", max_bytes=int(4 * 2**30)))
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_mb()
    images = sorted((Path(args.data) / "imagesTr").glob("*_0000.nii.gz"))[: args.child]
    if len(images) < args.child:
        raise SystemExit(f"only {len(images)} scans in {args.data}")
    def one_round():
        t0, c0 = time.perf_counter(), time.process_time()
        prompted, dices, per_scan_peak = 0, [], []
        for i, path in enumerate(images):
            case = path.name[: -len("_0000.nii.gz")]
            itk_image = sitk.ReadImage(str(path))
            image = sitk.GetArrayFromImage(itk_image).astype(np.float32)
            gt = sitk.GetArrayFromImage(sitk.ReadImage(str(path.parent.parent / "labelsTr" / f"{case}.nii.gz"))) > 0
            rng = np.random.default_rng([args.seed, i])
            labels = label_volume(image, teacher_from_truth(gt), generalist, rng, fusion="MV",
                                  spacing=itk_image.GetSpacing()[::-1],
                                  cache_key=("pseudolabel_round_benchmark", case))
            np.savez_compressed(work / f"{case}.npz", y=labels.fused.astype(np.uint8))
            prompted += labels.n_prompted_slices
            dices.append(dice(labels.fused, gt))
            per_scan_peak.append(_peak_mb())
        return time.perf_counter() - t0, time.process_time() - c0, prompted, dices, per_scan_peak

    round_s, cpu_s, prompted, dices, per_scan_peak = one_round()  # cold: every slice encoded (cache empty)
    warm = None
    if args.warm:  # the same prompts again: every embedding from the cache, only the decoder runs
        warm_s, _, warm_prompted, _, _ = one_round()
        warm = {"warm_round_s": warm_s, "warm_slices_per_s": warm_prompted / max(warm_s, 1e-9)}
    out = {
        "n": args.child, "generalist": args.generalist, "dtype": str(getattr(generalist, "dtype", "n/a")),
        "cache": args.cache, "load_s": load_s, "round_s": round_s, "s_per_scan": round_s / args.child,
        "prompted_slices": prompted, "s_per_slice": round_s / max(prompted, 1), "cpu_s": cpu_s,
        "cpu_s_per_slice": cpu_s / max(prompted, 1),
        "rss_start_mb": rss_start, "rss_after_load_mb": rss_loaded, "peak_rss_mb": _peak_mb(),
        "peak_after_first_scan_mb": per_scan_peak[0], "mean_dice_yf": float(np.mean(dices)),
        "threads": torch.get_num_threads(), "slices_per_s": prompted / max(round_s, 1e-9), **(warm or {}),
    }
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--generalist", default="litemedsam")
    p.add_argument("--dtype", default="bf16", help="generalist dtype: bf16, fp32, fp16 or auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--shape", type=int, nargs=3, default=(48, 48, 32), metavar=("X", "Y", "Z"))
    p.add_argument("--cache", choices=["run", "off"], default="run")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--warm", action="store_true", help="run each round twice: cold (cache empty), then warm "
                   "(every embedding from the cache); slices/s of both")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    from nnunet_fmabs.data.phantom import make_phantom

    with tempfile.TemporaryDirectory(prefix="fmabs_plround_data_") as tmp:
        data = make_phantom(Path(tmp), dataset_id=995, name="PLRoundPhantom", n_train=max(args.sizes), n_test=0,
                            shape=tuple(args.shape), seed=args.seed, progress=False)
        print(f"{max(args.sizes)} phantom scans {tuple(args.shape)} (x, y, z); generalist {args.generalist} "
              f"(dtype asked: {args.dtype}) on {args.device}; embedding cache {args.cache}; one fresh process per N", flush=True)
        rows = []
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--child", str(n), "--data", str(data), "--generalist", args.generalist,
                   "--dtype", args.dtype, "--device", args.device, "--cache", args.cache, "--threads",
                   str(args.threads), "--seed", str(args.seed), *(["--warm"] if args.warm else [])]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                return 1
            r = json.loads(line[len("RESULT "):])
            rows.append(r)
            print(f"  N = {n:3d} ({r['dtype']}): round {r['round_s']:7.1f} s ({r['s_per_scan']:.2f} s/scan, "
                  f"{r['prompted_slices']} slices, {1000 * r['s_per_slice']:.0f} ms/slice, "
                  f"{1000 * r['cpu_s_per_slice']:.0f} ms CPU/slice); RSS after load "
                  f"{r['rss_after_load_mb']:.0f} MB, peak {r['peak_rss_mb']:.0f} MB (after scan 1: "
                  f"{r['peak_after_first_scan_mb']:.0f} MB); Dice(Y_f, GT) {r['mean_dice_yf']:.3f}; "
                  f"{r['slices_per_s']:.0f} slices/s cold" +
                  (f", {r['warm_slices_per_s']:.0f} warm" if "warm_slices_per_s" in r else ""), flush=True)
    peaks = [r["peak_rss_mb"] for r in rows]
    load = os.getloadavg()
    print(f"peak RSS from N = {rows[0]['n']} to N = {rows[-1]['n']}: {peaks[0]:.0f} -> {peaks[-1]:.0f} MB "
          f"({peaks[-1] - peaks[0]:+.0f} MB); load average {load[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "shape": list(args.shape), "loadavg": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
