"""The demo's comparison on more test scans: FM-ABS HER against Sup cross, default setting, one seed per call.

The demo (``nnunet-fmabs demo``) scores its two methods on 8 test scans; at this size one method moves 5-15 Dice
points against another from seed to seed and a 3-point margin cannot be resolved on 8 scans (benchmarks/README.md,
"Demo"). This runs the demo's default setting (phantom, plans, FMABS_* settings, ``--set`` overrides, the same
nnU-Net commands) with ``--n-test`` test scans, and prints the mean Dice of each method on the demo's own 8 test
scans (a test case does not depend on how many are made: ``phantom_test_000``-``007`` are the demo's) and on all
of them, plus the paired difference per scan. Sup cross is deterministic on a given CPU whatever the thread count;
pin each call to a core to run two at a time (``taskset -c N``; nnUNetv2_train sets torch to all cores itself).

    python benchmarks/demo_seeds.py --workdir /tmp/demo24_s1 --seed 1 --set FMABS_LAMBDA_SAM_SCHEDULE=guarded
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from nnunet_fmabs import demo

DEMO_TEST_SCANS = demo.SETTINGS["default"].n_test  # the demo scores phantom_test_000 .. (this - 1)


def per_case_dice(workdir: Path, trainer: str) -> dict[str, float]:
    """Dice per test case of ``trainer``'s predictions (the demo's ``fmabs_metrics.json``)."""
    metrics = json.loads((workdir / "predictions" / trainer / "fmabs_metrics.json").read_text())
    return {case: values["1"]["dice"] for case, values in metrics["cases"].items()}


def summary(workdir: Path, seed: int, overrides: list[str]) -> str:
    dice = {m: per_case_dice(workdir, m) for m in demo.METHODS}
    cases = sorted(dice[demo.FMABS])
    demo_cases = {f"phantom_test_{i:03d}" for i in range(DEMO_TEST_SCANS)}  # make_phantom's test case names
    first = [c for c in cases if c in demo_cases]
    lines = [f"seed {seed}, default setting{' with ' + ' '.join(overrides) if overrides else ''}; Dice %, "
             f"first {len(first)} test scans (the demo's) / all {len(cases)}:"]
    for m in demo.METHODS:
        lines.append(f"  {m:<22} {100 * statistics.fmean(dice[m][c] for c in first):6.2f} / "
                     f"{100 * statistics.fmean(dice[m][c] for c in cases):6.2f}")
    diff = {c: dice[demo.FMABS][c] - dice[demo.SUPCROSS][c] for c in cases}
    lines.append(f"  FM-ABS - Sup cross      {100 * statistics.fmean(diff[c] for c in first):+6.2f} / "
                 f"{100 * statistics.fmean(diff.values()):+6.2f}; FM-ABS wins {sum(d > 0 for d in diff.values())} "
                 f"of {len(diff)} scans")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, type=Path, help="a new or empty folder (the demo refuses others)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=24, help="test scans (default 24; the demo itself makes 8)")
    p.add_argument("--set", action="append", default=[], metavar="FMABS_NAME=VALUE",
                   help="a run setting on top of the demo's default, as `nnunet-fmabs demo --set` (repeatable)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.n_test < DEMO_TEST_SCANS:
        p.error(f"--n-test {a.n_test}: at least the demo's {DEMO_TEST_SCANS}")
    setting = dataclasses.replace(demo.SETTINGS["default"], n_test=a.n_test)
    args = argparse.Namespace(workdir=a.workdir, device=a.device, smoke=False, full=False, seed=a.seed, set=a.set)
    demo.run_demo(args, setting)
    text = summary(a.workdir.expanduser().resolve(), a.seed, a.set)
    print(text)
    return text


if __name__ == "__main__":
    main()
