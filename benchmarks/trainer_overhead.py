"""Seconds per training iteration: FM-ABS trainers against nnU-Net's own ``nnUNetTrainer``.

One process, one phantom dataset made here, one nnU-Net plan (same patch, same batch size B for
every trainer), trainers built in-process. Batches are drawn from each trainer's own data loader
*before* timing, so the figures are ``train_step`` alone (forward, losses, backward, SGD step,
EMA), without data loading or augmentation. Blocks of iterations of the trainers are interleaved
(A B C A B C ...) and the median block is reported, so load from other processes hits all alike; both
wall-clock and the process's CPU time are reported (with ``--threads 1`` the CPU time is a clean
measure of work on a loaded machine).

Trainers timed (``--trainers`` picks a subset):

  nnUNetTrainer          nnU-Net's default: B patches, deep supervision, Dice + CE
  nnUNetTrainer_2B       the same with batch 2B (as many student patches as FM-ABS)
  SupCrossTrainer        B cross-labeled patches, partial CE, no teacher
  MeanTeacherTrainer     B + B patches, partial CE + L_c (J = 2 teacher passes)
  FMABSTrainer_RAND_MV   B + B patches, partial CE + L_c (J = 2); before the first pseudo-label
                         round (no Y_f in the batch: L_sup^SAM is skipped)
  FMABSTrainer_RAND_MV+Yf  the same batches with a Y_f channel filled in (as between pseudo-label
                         rounds): + the noise-tolerant Dice on every patch

Expected from counting passes (forward = 1 unit, backward = 2): nnU-Net on B patches costs 3B; an
FM-ABS iteration costs 3 x 2B (student on 2B patches) + 2 x 2B (J = 2 teacher forwards on 2B) =
10B, i.e. 3.3x nnU-Net at the same B, 1.67x nnU-Net at 2B. "One extra teacher forward" on the
same patches would be (3 + 1) / 3 = 1.33x.

    python benchmarks/trainer_overhead.py                      # phantom 64x64x48, nnU-Net's own plan
    python benchmarks/trainer_overhead.py --patch 48 48 32 --base-features 16 --iterations 2 --blocks 3 --threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATASET_ID = 994
DATASET = "Dataset994_OverheadPhantom"
ALL_TRAINERS = ("nnUNetTrainer", "nnUNetTrainer_2B", "SupCrossTrainer", "MeanTeacherTrainer", "FMABSTrainer_RAND_MV",
                "FMABSTrainer_RAND_MV+Yf")


def prepare(workdir: Path, shape, n_train: int, patch, base_features, batch) -> tuple[str, dict]:
    """Phantom -> nnU-Net plan + preprocess (stock CLI); optional derived plans. Returns (plans name, plans)."""
    from nnunet_fmabs.workspace import NnUNetWorkspace

    workspace = NnUNetWorkspace(workdir, folder_names=("raw", "preprocessed", "results")).create()
    folder = workspace.preprocessed / DATASET
    if not (folder / "nnUNetPlans.json").is_file():
        workspace.make_phantom(DATASET_ID, name="OverheadPhantom", n_train=n_train, n_test=0, shape=tuple(shape), seed=0)
        workspace.plan(DATASET_ID)
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    if patch is None and base_features is None and batch is None:
        return "nnUNetPlans", plans
    from la_table1 import derive_plans, patch_in_plans_axes

    conf = plans["configurations"]["3d_fullres"]
    patch_axes = patch_in_plans_axes(patch, plans["transpose_forward"]) if patch else conf["patch_size"]
    feats = base_features or conf["architecture"]["arch_kwargs"]["features_per_stage"][0]
    derived = derive_plans(plans, patch_size=patch_axes, batch_size=batch or conf["batch_size"],
                           base_features=feats, plans_name="nnUNetPlans_overhead")
    (folder / "nnUNetPlans_overhead.json").write_text(json.dumps(derived, indent=2))
    return "nnUNetPlans_overhead", derived


def with_yf(batches: list[dict]) -> list[dict]:
    """Copies of FM-ABS batches with a Y_f channel as after a pseudo-label round (values only matter for timing)."""
    out = []
    for b in batches:
        target = b["target"].clone()
        target[:, 1] = (b["data"][:, 0] > b["data"][:, 0].mean()).to(target.dtype)
        out.append({**b, "target": target})
    return out


def build(name: str, plans: dict, dataset_json: dict, device, n_batches: int):
    """(trainer, pre-fetched batches) for one entry of ALL_TRAINERS (not the +Yf ones)."""
    import copy

    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    import nnunet_fmabs.trainers as T

    plans = copy.deepcopy(plans)
    plans["continue_training"] = False
    base = name.split("+")[0]
    if base.startswith("nnUNetTrainer"):
        if base.endswith("_2B"):
            conf = plans["configurations"]["3d_fullres"]
            conf["batch_size"] = 2 * conf["batch_size"]
        trainer = nnUNetTrainer(plans, "3d_fullres", 0, dataset_json, device=device)
        trainer.initialize()
    else:
        trainer = getattr(T, base)(plans, "3d_fullres", 0, dataset_json, device=device)
        trainer.initialize()
        trainer.dataset_class = infer_dataset_class(trainer.preprocessed_dataset_folder)
        trainer._open_campaign()
        trainer._run_due_events()
    train, _val = trainer.get_dataloaders()
    batches = [next(train) for _ in range(n_batches)]
    for loader in (train, _val):
        for stop in ("finish", "_finish"):
            if hasattr(loader, stop):
                getattr(loader, stop)()
                break
    trainer.network.train()
    if hasattr(trainer, "iteration"):
        trainer.iteration = trainer.t_max // 2  # mid-training weights lambda_sam, lambda_c (timing only)
    return trainer, batches


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--workdir", default=None, help="default: a temporary folder, removed at the end")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 64, 48), metavar=("X", "Y", "Z"))
    p.add_argument("--n-train", type=int, default=8)
    p.add_argument("--patch", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="override nnU-Net's patch (phantom x, y, z voxels)")
    p.add_argument("--base-features", type=int, default=None, help="override the U-Net's first-stage features")
    p.add_argument("--batch", type=int, default=None, help="override B (nnU-Net's batch size)")
    p.add_argument("--iterations", type=int, default=3, help="iterations per timed block")
    p.add_argument("--blocks", type=int, default=3, help="interleaved blocks per trainer (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--trainers", nargs="+", default=list(ALL_TRAINERS), choices=ALL_TRAINERS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 makes CPU time "
                   "a robust measure on a loaded machine")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fmabs_overhead_")
        workdir = Path(tmp.name)
    else:
        workdir = Path(args.workdir).resolve()
    os.environ.update({"nnUNet_raw": str(workdir / "raw"), "nnUNet_preprocessed": str(workdir / "preprocessed"),
                       "nnUNet_results": str(workdir / "results"), "nnUNet_compile": "0"})
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    for k in [k for k in os.environ if k.startswith("FMABS_")]:
        del os.environ[k]
    os.environ.update({"FMABS_BUDGET": "3", "FMABS_K": "1", "FMABS_EPOCHS": "10", "FMABS_ITERATIONS_PER_EPOCH": "10"})
    # no generalist is loaded: no pseudo-label round runs here

    shutil.rmtree(workdir / "results", ignore_errors=True)  # FM-ABS refuses to overwrite an earlier run's pool
    plans_name, plans = prepare(workdir, args.shape, args.n_train, args.patch, args.base_features, args.batch)
    os.environ["nnUNet_n_proc_DA"] = "0"  # batches are pre-fetched; no worker processes
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dataset_json = json.loads((workdir / "preprocessed" / DATASET / "dataset.json").read_text())
    conf = plans["configurations"]["3d_fullres"]
    arch = conf["architecture"]["arch_kwargs"]
    n = args.warmup + args.iterations * args.blocks
    print(f"plans {plans_name}: patch {conf['patch_size']}, B = {conf['batch_size']}, features "
          f"{arch['features_per_stage']}; device {device}, torch threads {torch.get_num_threads()}; "
          f"{args.blocks} blocks x {args.iterations} iterations after {args.warmup} warm-up", flush=True)

    trainers = {}
    quiet = open(workdir / "trainers.log", "a")  # nnU-Net's trainers print their log lines to stdout
    for name in args.trainers:
        t0 = time.perf_counter()
        base = name.split("+")[0]
        with contextlib.redirect_stdout(quiet):
            if name.endswith("+Yf"):  # the same trainer (one run folder), its batches with Y_f filled in
                if base not in trainers:
                    trainers[base] = build(base, plans, dataset_json, device, n)
                trainers[name] = (trainers[base][0], with_yf(trainers[base][1]))
            elif name not in trainers:
                trainers[name] = build(name, plans, dataset_json, device, n)
        shape = tuple(trainers[name][1][0]["data"].shape)
        print(f"  built {name}: batch {shape} in {time.perf_counter() - t0:.1f} s", flush=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for name, (trainer, batches) in trainers.items():
        with contextlib.redirect_stdout(quiet):
            for b in batches[: args.warmup]:
                trainer.train_step(b)
    sync()
    trainers = {name: trainers[name] for name in args.trainers}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    cpu_times: dict[str, list[float]] = {name: [] for name in trainers}
    for block in range(args.blocks):
        for name, (trainer, batches) in trainers.items():
            start = args.warmup + block * args.iterations
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            for b in batches[start: start + args.iterations]:
                trainer.train_step(b)
            sync()
            times[name].append((time.perf_counter() - t0) / args.iterations)
            cpu_times[name].append((time.process_time() - c0) / args.iterations)
            print(f"  block {block + 1}/{args.blocks} {name}: {times[name][-1]:.3f} s/iteration wall, "
                  f"{cpu_times[name][-1]:.3f} s CPU", flush=True)

    load = os.getloadavg()
    rows = []
    for clock, table in (("wall", times), ("cpu", cpu_times)):
        ref = statistics.median(table["nnUNetTrainer"]) if "nnUNetTrainer" in table else None
        ref2 = statistics.median(table["nnUNetTrainer_2B"]) if "nnUNetTrainer_2B" in table else None
        what = "wall-clock" if clock == "wall" else "CPU time of this process (all its threads)"
        print(f"\nseconds per iteration, {what}, median of {args.blocks} blocks (load average {load[0]:.2f}):")
        for name, ts in table.items():
            med = statistics.median(ts)
            patches = trainers[name][1][0]["data"].shape[0]
            row = {"trainer": name, "clock": clock, "s_per_iter": med, "blocks": ts, "patches": patches,
                   "vs_nnUNetTrainer": med / ref if ref else None,
                   "vs_nnUNetTrainer_2B": med / ref2 if ref2 else None}
            rows.append(row)
            extra = "".join(f"  {v:.2f}x {k[3:]}" for k, v in row.items() if k.startswith("vs_") and v is not None)
            print(f"  {name:26s} {med:7.3f} s  ({patches} patches){extra}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "plans": plans_name, "patch": conf["patch_size"], "batch_size": conf["batch_size"],
            "features": arch["features_per_stage"], "device": str(device), "threads": torch.get_num_threads(),
            "loadavg": load, "iterations": args.iterations, "blocks": args.blocks, "rows": rows}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
