#!/usr/bin/env python
"""Crash harness: kill a tiny FMABSTrainer_HER_MV run with SIGKILL at random moments, resume with
`--c`, and compare with an uninterrupted run of the same seed (issue "never lose an annotation").

    python tools/crash_harness.py --kills 20 --workdir /tmp/fmabs_crash

Each trial draws a kill point (nnunet_fmabs.faults.KILL_POINTS) and an occurrence, runs until the
process dies, resumes (possibly dying again at a second random point), and finally checks: the same
pool (queries, slices, annotations), the same pseudo-label rounds, a loadable final checkpoint,
no temporary files left. Needs nothing but this package (makes its own phantom).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

from nnunet_fmabs.faults import KILL_POINTS
from nnunet_fmabs.runstate import run_state

TRAINER = "FMABSTrainer_HER_MV"
RUN_ENV = {"FMABS_EPOCHS": "4", "FMABS_ITERATIONS_PER_EPOCH": "2", "FMABS_VAL_ITERATIONS": "1", "FMABS_BUDGET": "3",
           "FMABS_K": "1", "FMABS_PL_ROUNDS": "0.25,0.5,0.75", "FMABS_TTA": "0", "nnUNet_n_proc_DA": "0",
           "nnUNet_def_n_proc": "1", "nnUNet_compile": "0"}
REPO = Path(__file__).resolve().parents[1]


def sh(args, env, check=True):
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def train(env, *extra, crash=None):
    e = dict(env)
    if crash:
        e["FMABS_CRASH_AT"] = crash
    return sh([str(Path(sys.executable).parent / "nnUNetv2_train"), "991", "3d_fullres", "0", "-tr", TRAINER,
               "-device", "cpu", *extra], e, check=False)


def fold(results: Path) -> Path:
    return results / "Dataset991_FMABSPhantom" / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--workdir", default="fmabs_crash_harness")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generalist", default="box_threshold",
                    help="box_threshold (a cheap plugin from tests/plugins) or litemedsam")
    args = ap.parse_args()
    work = Path(args.workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMABS_") or k == "FMABS_CPU_THREADS"}
    env.update(RUN_ENV, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "pp"),
               FMABS_GENERALIST=args.generalist)
    if args.generalist == "box_threshold":
        from nnunet_fmabs.generalists.registry import declare_plugins

        plugins = declare_plugins(work / "plugins", "fmabs-harness-plugins",
                                  {"box_threshold": "tests.plugins.box_generalist:BoxThresholdGeneralist"})
        env["PYTHONPATH"] = os.pathsep.join([str(plugins), str(REPO)])
    if not (work / "pp" / "Dataset991_FMABSPhantom").is_dir():
        from nnunet_fmabs.data.phantom import make_phantom

        (work / "pp").mkdir(exist_ok=True)
        make_phantom(work / "raw", n_train=6, n_test=2, shape=(32, 32, 32), seed=3, progress=False)
        plan_env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}
        sh([str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", "991", "-c", "3d_fullres",
            "-np", "1"], plan_env)
    ref_env = {**env, "nnUNet_results": str(work / "reference")}
    if not (fold(work / "reference") / "checkpoint_final.pth").is_file():
        t = time.time()
        proc = train(ref_env)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        print(f"reference run: {time.time() - t:.0f} s")
    reference = run_state(fold(work / "reference"))

    rng = random.Random(args.seed)
    rows = []
    for trial in range(args.kills):
        results = work / f"trial_{trial:02d}"
        trial_env = {**env, "nnUNet_results": str(results)}
        kills = []
        crash = f"{rng.choice(KILL_POINTS)}:{rng.randint(1, 4)}"
        proc = train(trial_env, crash=crash)
        kills.append((crash, proc.returncode))
        resumes = 0
        while not (fold(results) / "checkpoint_final.pth").is_file():
            resumes += 1
            if resumes > 5:
                break
            crash = f"{rng.choice(KILL_POINTS)}:{rng.randint(1, 3)}" if rng.random() < 0.4 else None
            proc = train(trial_env, "--c", crash=crash)
            kills.append((crash, proc.returncode))
            if proc.returncode not in (0, -9):
                print(proc.stderr[-3000:])
                break
        ok_final = (fold(results) / "checkpoint_final.pth").is_file()
        loadable = False
        if ok_final:
            ckpt = torch.load(fold(results) / "checkpoint_final.pth", map_location="cpu", weights_only=False)
            loadable = "network_weights" in ckpt and ckpt["fmabs"]["teacher"] is not None
        same = ok_final and run_state(fold(results)) == reference
        leftovers = [str(p) for p in fold(results).rglob(".tmp-*")] if fold(results).exists() else []
        rows.append({"trial": trial, "kills": kills, "resumes": resumes, "final": ok_final, "loadable": loadable,
                     "same_state": same, "temporaries_left": leftovers})
        story = " -> ".join(f"{c or 'no kill'} ({rc})" for c, rc in kills)
        print(f"trial {trial:2d}: {story:70s} "
              f"final={ok_final} loadable={loadable} same={same} tmp={len(leftovers)}", flush=True)
    (work / "crash_harness.json").write_text(json.dumps(rows, indent=2))
    passed = sum(r["same_state"] and r["loadable"] and not r["temporaries_left"] for r in rows)
    print(f"{passed} passed, {len(rows) - passed} failed")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
