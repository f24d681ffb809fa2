"""Pseudo-label quality on real LA scans: Dice(Y_f) - Dice(teacher), per teacher, recipe and fusion (2.2).

The question of issue 12: does the generalist, prompted by a teacher mask P^t, give pseudo labels Y_f
that are better than P^t itself? Measured on the LA training scans (``--la-root``, UA-MT layout), at
the CPU protocol's 1.5 mm grid and at the native 0.625 mm, for

- simulated teachers, built in mm from the ground truth so that they are the same object at both
  resolutions: ``gt``; ``dilated`` (3 mm); ``dilated+blobs`` (3 mm and three 7.5-mm stray cubes);
  ``gt+blobs`` (six cubes); ``eroded`` (3 mm); ``shifted`` (3 mm along the first axis);
- real teacher snapshots: the teacher masks an FM-ABS run saved with each pseudo-label round
  (``--real-run``: a run's ``fold_N`` folder; its ``fmabs/pseudolabels/round_NN/<case>.npz`` hold
  ``teacher`` next to ``y``), on the run's preprocessed grid, and upsampled to the native grid.

Every recipe reuses one embedding cache (the image encoder runs once per slice, each further recipe
costs the mask decoder only). Fusions are computed from the same three view masks: MV, UA, and the
guards that compare with the teacher (``MV&T+d``: MV inside the teacher dilated by d mm). Recipes with
``expert bounds`` treat the scan as labeled: the simulated expert's bbox-middle planes of its truth bound the
boxes (``FMABS_EXPERT_BOUNDS_MM``; in training only the labeled scans have them). The printed
table is what benchmarks/README.md shows; ``--json`` keeps every case.

    python benchmarks/pseudolabel_quality.py --cases 4 --resolutions 1.5 native
    python benchmarks/pseudolabel_quality.py --real-run RUN/fold_0 --resolutions 1.5
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nnunet_fmabs.data.la import IMAGE_FOLDER, LA_SPACING_MM, H5_NAME, load_la_case, read_case_list, resample_case  # noqa: E402
from nnunet_fmabs.pseudolabels.fusion import fuse  # noqa: E402
from nnunet_fmabs.annotation.pool import CrossAnnotation  # noqa: E402
from nnunet_fmabs.annotation.slices import select_slices  # noqa: E402
from nnunet_fmabs.pseudolabels.expert_bounds import ExpertExtent  # noqa: E402
from nnunet_fmabs.pseudolabels.labeler import dice, label_volume, label_volume_fine  # noqa: E402
from nnunet_fmabs.pseudolabels.prompts import DEFAULT_RECIPE, PAPER_RECIPE, PromptRecipe  # noqa: E402

SIM_TEACHERS = ("gt", "dilated", "dilated+blobs", "gt+blobs", "eroded", "shifted")
OVER_SEGMENTING = ("dilated", "dilated+blobs", "gt+blobs")

RECIPE_GRID: dict[str, PromptRecipe] = {
    "paper": PAPER_RECIPE,
    "default": DEFAULT_RECIPE,
    "all-fg, 10 px of grid (old)": PAPER_RECIPE.with_(object_filter=False),  # growth fixed below per grid
    "object, 0 mm": PAPER_RECIPE.with_(box_growth_mm=0.0),
    "object, 2.5 mm": PAPER_RECIPE.with_(box_growth_mm=2.5),
    "object, 6.25 mm": PAPER_RECIPE.with_(box_growth_mm=6.25),
    "object, 12 mm": PAPER_RECIPE.with_(box_growth_mm=12.0),
    "object, 2.5 mm, no specks<20mm2": PAPER_RECIPE.with_(box_growth_mm=2.5, min_slice_area_mm2=20.0),
    "object, 2.5 mm, no specks<60mm2": PAPER_RECIPE.with_(box_growth_mm=2.5, min_slice_area_mm2=60.0),
    "all-fg, 2.5 mm": PAPER_RECIPE.with_(box_growth_mm=2.5, object_filter=False),
    "default, core 1.5 mm": DEFAULT_RECIPE.with_(core_mm=1.5),
    "default, core 3 mm": DEFAULT_RECIPE.with_(core_mm=3.0),
    "default, core 4.5 mm": DEFAULT_RECIPE.with_(core_mm=4.5),
    "default, within 0 mm": DEFAULT_RECIPE.with_(limit_to_teacher_mm=0.0),
    "default, smoothed 1.5 mm": DEFAULT_RECIPE.with_(smooth_mm=1.5),
    "default, refined 1x": DEFAULT_RECIPE.with_(refine_steps=1),
    "default, refined 2x": DEFAULT_RECIPE.with_(refine_steps=2),
    "default, core 3 mm, refined 1x": DEFAULT_RECIPE.with_(core_mm=3.0, refine_steps=1),
    "default, core 1.5 mm, within 0 mm": DEFAULT_RECIPE.with_(core_mm=1.5, limit_to_teacher_mm=0.0),
    "default, core 1.5 mm, refined 1x": DEFAULT_RECIPE.with_(core_mm=1.5, refine_steps=1),
    "default, core 1.5 mm, refined 1x, within 0 mm": DEFAULT_RECIPE.with_(core_mm=1.5, refine_steps=1,
                                                                          limit_to_teacher_mm=0.0),
    "default, core 3 mm, within 0 mm": DEFAULT_RECIPE.with_(core_mm=3.0, limit_to_teacher_mm=0.0),
    # the demo's phantom (1.25 mm, ~12-px organ): growth in whole voxels
    "default, 0 mm": DEFAULT_RECIPE.with_(box_growth_mm=0.0),
    "default, 1.25 mm": DEFAULT_RECIPE.with_(box_growth_mm=1.25),
    "default, 3.75 mm (demo)": DEFAULT_RECIPE.with_(box_growth_mm=3.75),
    "default, core 1.5 mm, 1.25 mm": DEFAULT_RECIPE.with_(core_mm=1.5, box_growth_mm=1.25),
    "default, core 1.5 mm, 3.75 mm": DEFAULT_RECIPE.with_(core_mm=1.5, box_growth_mm=3.75),
    "default, core 2.5 mm": DEFAULT_RECIPE.with_(core_mm=2.5),
    "default, core 2.5 mm, within 0 mm": DEFAULT_RECIPE.with_(core_mm=2.5, limit_to_teacher_mm=0.0),
    "default, core 2.5 mm, 1.25 mm": DEFAULT_RECIPE.with_(core_mm=2.5, box_growth_mm=1.25),
    # a labeled scan: boxes bounded by the expert's planes (the simulated expert's bbox-middle planes of the truth)
    "default, expert bounds 0 mm": DEFAULT_RECIPE.with_(expert_bounds_mm=0.0),
    "default, expert bounds 2.5 mm": DEFAULT_RECIPE.with_(expert_bounds_mm=2.5),
    "default, expert bounds 5 mm": DEFAULT_RECIPE.with_(expert_bounds_mm=5.0),
    "default, expert bounds 0 mm, no limit": DEFAULT_RECIPE.with_(expert_bounds_mm=0.0, limit_to_teacher_mm=None),
    "default, expert bounds 2.5 mm, no limit": DEFAULT_RECIPE.with_(expert_bounds_mm=2.5, limit_to_teacher_mm=None),
    "default, 3.75 mm, expert bounds 0 mm (demo)": DEFAULT_RECIPE.with_(box_growth_mm=3.75, expert_bounds_mm=0.0),
}


def sphere(radius_mm: float, spacing: float) -> np.ndarray:
    r = int(np.ceil(radius_mm / spacing))
    grid = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1] * spacing
    return (grid ** 2).sum(0) <= radius_mm ** 2


def grow_mm(mask: np.ndarray, mm: float, spacing: float) -> np.ndarray:
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= mm


def shrink_mm(mask: np.ndarray, mm: float, spacing: float) -> np.ndarray:
    return ndimage.distance_transform_edt(mask, sampling=spacing) > mm


def blobs(gt: np.ndarray, n: int, spacing: float, rng: np.random.Generator, side_mm: float = 7.5) -> np.ndarray:
    """``n`` cubes of ``side_mm`` at random places 5-25 mm outside the object (positions in mm, so the
    same cubes at every resolution)."""
    out = np.zeros_like(gt)
    distance = ndimage.distance_transform_edt(~gt, sampling=spacing)
    candidates = np.argwhere((distance > 5) & (distance < 25))
    half = max(1, int(round(side_mm / spacing / 2)))
    for index in rng.choice(len(candidates), size=min(n, len(candidates)), replace=False):
        c = candidates[index]
        out[tuple(slice(max(0, v - half), v + half) for v in c)] = True
    return out


def simulated_teacher(kind: str, gt: np.ndarray, spacing: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gt":
        return gt.copy()
    if kind == "dilated":
        return grow_mm(gt, 3.0, spacing)
    if kind == "dilated+blobs":
        return grow_mm(gt, 3.0, spacing) | blobs(gt, 3, spacing, rng)
    if kind == "gt+blobs":
        return gt | blobs(gt, 6, spacing, rng)
    if kind == "eroded":
        return shrink_mm(gt, 3.0, spacing)
    if kind == "shifted":
        return np.roll(gt, int(round(3.0 / spacing)), axis=0)
    raise ValueError(kind)


def accepted_views(views, scores, teacher: np.ndarray, threshold: float):
    """Each view's slices whose predicted IoU is below ``threshold`` replaced by the teacher's slice."""
    out = []
    for axis, (view, view_scores) in enumerate(zip(views, scores)):
        view = view.copy()
        for index, score in view_scores.items():
            if score < threshold:
                where = [slice(None)] * 3
                where[axis] = index
                view[tuple(where)] = teacher[tuple(where)]
        out.append(view)
    return out


def guarded(views, teacher: np.ndarray, spacing: float, rule: str, scores=None) -> np.ndarray:
    """Fusions of the three view masks; ``MV&T+d``: MV where the teacher dilated by d mm is foreground;
    ``T+3v>=k``: the teacher as a fourth voter, foreground with k of 4 votes; ``MV@iou>=q``: MV of the views
    whose slices with predicted IoU below q are the teacher's."""
    if rule in ("MV", "UA"):
        return fuse(views, rule)
    if rule.startswith("MV@iou>="):
        return fuse(accepted_views(views, scores, teacher, float(rule[8:])), "MV")
    if rule.startswith("T+3v>="):
        return sum(v.astype(np.uint8) for v in views) + teacher.astype(np.uint8) >= int(rule[6:])
    if rule.startswith("MV&T+"):
        return fuse(views, "MV") & grow_mm(teacher, float(rule[5:]), spacing)
    if rule == "MV|T&G":  # teacher voxels where at least one view agrees, plus MV
        votes = sum(v.astype(np.uint8) for v in views)
        return (votes >= 2) | (teacher & (votes >= 1))
    raise ValueError(rule)


FUSIONS = ("Y_f", "MV", "UA", "MV&T+3", "MV&T+6", "MV|T&G", "T+3v>=3", "MV@iou>=0.8", "MV@iou>=0.9")


def load_case(la_root: Path, case: str, resolution: str):
    """(image, gt, spacing, fine): ``native`` (0.625 mm), a spacing in mm (resampled as convert_la does), or
    ``raw@S``: the S-mm grid whose prompts are the native slices at its positions (``fine``)."""
    image, label = load_la_case(la_root / IMAGE_FOLDER / case / H5_NAME)
    if resolution == "native":
        return image, label > 0, LA_SPACING_MM, None
    spacing = float(resolution.split("@")[-1])
    coarse, coarse_label = resample_case(image, label, LA_SPACING_MM, spacing)
    fine = None
    if resolution.startswith("raw@"):
        fine = (image, (LA_SPACING_MM,) * 3, native_maps(coarse.shape, image.shape, spacing))
    return coarse, coarse_label > 0, spacing, fine


def native_maps(coarse_shape, native_shape, spacing: float) -> list[np.ndarray]:
    """Native index of every coarse index: resample_case aligns the first voxel centres."""
    factor = spacing / LA_SPACING_MM
    return [np.clip(np.floor(np.arange(n) * factor + 0.5).astype(np.int64), 0, m - 1)
            for n, m in zip(coarse_shape, native_shape)]


def real_teachers(run: Path, rounds: list[int] | None):
    """(round, iteration, case, image, gt, teacher, spacing) on the run's preprocessed grid."""
    import blosc2  # noqa: F401  (nnU-Net's preprocessed format)
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_fmabs.pseudolabels.store import PseudoLabelStore

    plans = json.loads((run.parent / "plans.json").read_text())
    config = json.loads((run.parent / "plans.json").read_text())["configurations"]["3d_fullres"]
    spacing = tuple(float(s) for s in config["spacing"])
    from nnunetv2.paths import nnUNet_preprocessed

    pp = Path(nnUNet_preprocessed) / plans["dataset_name"] / config["data_identifier"]
    dataset_class = infer_dataset_class(str(pp))
    state = json.loads((run / "fmabs" / "pseudolabels" / "state.json").read_text())
    for entry in state["rounds"]:
        if rounds is not None and entry["round"] not in rounds:
            continue
        folder = run / "fmabs" / "pseudolabels" / entry["dir"]
        for path in sorted(folder.glob("*.npz")):
            teacher = PseudoLabelStore.load_teacher(path)
            if teacher is None:
                continue
            case = path.stem
            data, seg, _, props = dataset_class(str(pp), [case]).load_case(case)
            yield entry["round"], entry["iteration"], case, np.asarray(data[0]), np.asarray(seg[0]) > 0, teacher, \
                spacing, props


def run_recipes(image, gt, teacher, spacing, generalist, recipes, key, seed, fusions=FUSIONS, fine=None):
    """``fine``: (fine image, its spacing, index maps): prompt the fine slices at the grid's positions."""
    rows = []
    d_teacher = dice(teacher, gt)
    sp = (spacing,) * 3 if np.isscalar(spacing) else spacing
    iso = float(np.mean(sp))
    extent = None
    if any(r.expert_bounds_mm is not None for r in recipes.values()):  # the simulated expert's planes of the truth
        extent = ExpertExtent.from_cross(CrossAnnotation.from_dense(gt, select_slices(gt, "bbox_middle")))
    for name, recipe in recipes.items():
        t0 = time.time()
        if fine is None:
            out = label_volume(image, teacher, generalist, np.random.default_rng(seed), spacing=sp, recipe=recipe,
                               cache_key=key, extent=extent)
        else:
            out = label_volume_fine(fine[0], teacher, generalist, np.random.default_rng(seed), fine[2],
                                    fine_spacing=fine[1], spacing=sp, recipe=recipe, cache_key=key)
        seconds = time.time() - t0
        row = {"recipe": name, "dice_teacher": d_teacher, "prompted": out.n_prompted_slices, "seconds": seconds,
               "views": [dice(v, gt) for v in out.views]}
        row["Y_f"] = dice(out.fused, gt)  # what training reads: the recipe's own fusion (MV) and limit
        for rule in fusions:
            if rule != "Y_f":
                row[rule] = dice(guarded(out.views, teacher, iso, rule, out.scores), gt)
        rows.append(row)
    return rows


def summarize(rows, group_keys, fusions=FUSIONS):
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in group_keys)].append(r)
    lines = []
    header = " | ".join(group_keys) + " | n | Dice teacher | " + " | ".join(f"{f} (gain)" for f in fusions) + \
        " | slices/scan |"
    lines.append("| " + header)
    lines.append("|" + "---|" * (len(group_keys) + 4 + len(fusions)))
    for key, rs in sorted(groups.items()):
        t = np.mean([r["dice_teacher"] for r in rs])
        cells = [f"{np.mean([r[f] for r in rs]):.3f} ({np.mean([r[f] - r['dice_teacher'] for r in rs]):+.3f})"
                 for f in fusions]
        lines.append("| " + " | ".join(str(k) for k in key) + f" | {len(rs)} | {t:.3f} | " + " | ".join(cells)
                     + f" | {np.mean([r['prompted'] for r in rs]):.0f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--la-root", type=Path, default=REPO.parent / "shared" / "data" / "LA")
    p.add_argument("--cases", type=int, default=4, help="first N cases of train.list (simulated teachers)")
    p.add_argument("--skip", type=int, default=0, help="skip the first cases of train.list")
    p.add_argument("--resolutions", nargs="+", default=["1.5", "native"])
    p.add_argument("--teachers", nargs="+", default=list(SIM_TEACHERS))
    p.add_argument("--recipes", nargs="+", default=None, help=f"names from {list(RECIPE_GRID)}")
    p.add_argument("--real-run", type=Path, default=None, help="a run's fold folder with saved teacher masks")
    p.add_argument("--real-rounds", type=int, nargs="*", default=None)
    p.add_argument("--real-cases", type=int, default=None, help="at most N cases per round")
    p.add_argument("--generalist", default="litemedsam")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--use-points", action="store_true", help="pass the recipe's points to a box-only family")
    p.add_argument("--cache", type=Path, default=Path("/tmp/fmabs_plq_cache"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from nnunet_fmabs.generalists import EmbeddingCache, get_generalist

    sys.path.insert(0, str(Path(__file__).resolve().parent))

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.generalist == "box_threshold":  # the tests' cheap stand-in (no model): a pipeline check
        from pseudolabel_round import _get_generalist

        generalist = _get_generalist("box_threshold", "auto", "cpu")
    else:
        options = {} if args.dtype == "auto" else {"dtype": args.dtype}
        if args.use_points:
            options["use_points"] = True
        generalist = get_generalist(args.generalist, device="cpu", **options)
        generalist.set_cache(EmbeddingCache(args.cache, max_bytes=40 * 2**30))
    print(f"generalist {generalist}", flush=True)
    recipes = {k: RECIPE_GRID[k] for k in (args.recipes or list(RECIPE_GRID))}

    rows = []
    t_start = time.time()
    cases = read_case_list(args.la_root / "train.list")[args.skip:args.skip + args.cases]
    for resolution in args.resolutions if args.cases else []:
        for case in cases:
            image, gt, spacing, fine = load_case(args.la_root, case, resolution)
            grid_recipes = dict(recipes)
            if "all-fg, 10 px of grid (old)" in grid_recipes:  # the old default: 10 px of whatever grid
                grid_recipes["all-fg, 10 px of grid (old)"] = PAPER_RECIPE.with_(object_filter=False,
                                                                                   box_growth_mm=10 * spacing)
            for t_index, kind in enumerate(args.teachers):
                teacher = simulated_teacher(kind, gt, spacing, seed=1000 + t_index)
                for r in run_recipes(image, gt, teacher, spacing, generalist, grid_recipes,
                                     ("la", resolution if fine is None else "native", case), args.seed, fine=fine):
                    rows.append({"source": "simulated", "resolution": resolution, "case": case, "teacher": kind, **r})
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}),
                          flush=True)
    if args.real_run is not None:
        per_round = defaultdict(int)
        for rnd, iteration, case, image, gt, teacher, spacing, props in real_teachers(args.real_run, args.real_rounds):
            if args.real_cases is not None and per_round[rnd] >= args.real_cases:
                continue
            per_round[rnd] += 1
            for resolution in args.resolutions:
                if resolution.startswith("raw@"):
                    coarse_image, coarse_gt, coarse_teacher, fine = to_raw15(args.la_root, case, teacher, gt, props,
                                                                             args.real_run)
                    out = run_recipes(coarse_image, coarse_gt, coarse_teacher, fine[3], generalist, recipes,
                                      ("la", "native", case), args.seed, fine=fine[:3])
                elif resolution == "native":
                    image_n, gt_n, teacher_n, sp = to_native(args.la_root, case, teacher, props, args.real_run)
                    if image_n is None:
                        continue
                    out = run_recipes(image_n, gt_n, teacher_n, sp, generalist, recipes, ("la", "native", case),
                                      args.seed)
                else:
                    # the training's own key (dataset, configuration, case): its embedding cache serves
                    out = run_recipes(image, gt, teacher, spacing, generalist, recipes,
                                      (args.real_run.resolve().parent.parent.name, "3d_fullres", case), args.seed)
                for r in out:
                    rows.append({"source": "real", "resolution": resolution, "case": case,
                                 "teacher": f"real t={iteration}", **r})
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}),
                          flush=True)
    print(f"\n{len(rows)} rows in {time.time() - t_start:.0f} s; encoder stats {getattr(generalist, 'stats', {})}\n")
    print(summarize(rows, ("resolution", "teacher", "recipe")))
    print()
    over = [dict(r, teacher="over-segmenting (mean)") for r in rows if r["teacher"] in OVER_SEGMENTING]
    real = [dict(r, teacher="real (mean)") for r in rows if r["source"] == "real"]
    print(summarize(over + real, ("resolution", "teacher", "recipe")))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


def to_raw15(la_root: Path, case: str, teacher_pp: np.ndarray, gt_pp: np.ndarray, props, run: Path):
    """The run's teacher and truth on its raw grid ([x, y, z] of convert_la's NIfTI), with the native image and
    the index maps to prompt the native slices at that grid's positions."""
    from nnunet_fmabs.annotation.geometry import CaseGeometry

    plans = json.loads((run.parent / "plans.json").read_text())
    geometry = CaseGeometry.from_properties(props, plans["transpose_forward"], teacher_pp.shape)
    teacher = np.transpose(geometry.pp_volume_to_raw(teacher_pp.astype(np.uint8)), (2, 1, 0)) > 0
    gt = np.transpose(geometry.pp_volume_to_raw(gt_pp.astype(np.uint8)), (2, 1, 0)) > 0
    image, _ = load_la_case(la_root / IMAGE_FOLDER / case / H5_NAME)
    spacing = float(plans["configurations"]["3d_fullres"]["spacing"][0])
    maps = native_maps(teacher.shape, image.shape, spacing)
    coarse_image = image[np.ix_(*maps)]  # only for shape checks; the generalist sees the native slices
    return coarse_image, gt, teacher, (image, (LA_SPACING_MM,) * 3, maps, spacing)


def to_native(la_root: Path, case: str, teacher_pp: np.ndarray, props, run: Path):
    """The teacher of the run's grid (1.5 mm raw NIfTI, preprocessed) on the case's native 0.625 mm grid."""
    from nnunet_fmabs.annotation.geometry import CaseGeometry

    plans = json.loads((run.parent / "plans.json").read_text())
    geometry = CaseGeometry.from_properties(props, plans["transpose_forward"], teacher_pp.shape)
    raw_zyx = geometry.pp_volume_to_raw(teacher_pp.astype(np.uint8))
    raw_xyz = np.transpose(raw_zyx, (2, 1, 0))
    image, label = load_la_case(la_root / IMAGE_FOLDER / case / H5_NAME)
    spacing_run = float(plans["configurations"]["3d_fullres"]["spacing"][0])
    _, up = resample_case(raw_xyz.astype(np.float32), raw_xyz, spacing_run, LA_SPACING_MM)
    teacher = np.zeros(label.shape, bool)
    common = tuple(slice(0, min(a, b)) for a, b in zip(up.shape, label.shape))
    teacher[common] = up[common] > 0
    return image, label > 0, teacher, LA_SPACING_MM


if __name__ == "__main__":
    main()
