"""One pseudo-label round (2.2): teacher mask -> prompts -> generalist per view -> UA/MV fusion -> the
expert's planes put back -> Y_f of every training scan, then the round guard on the expert's planes.

Resumable: each scan's result is saved as it is made; a killed round goes on with the scans left.
The guard's scans (those the expert labeled) are prompted first: once they say the round is rejected, the other
scans, whose Y_f the rejection would throw away, are not prompted at all (the generalist is most of a round's time).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from nnunet_fmabs.annotation.pool import CrossAnnotation
from nnunet_fmabs.faults import kill_point
from nnunet_fmabs.progress import progress
from nnunet_fmabs.pseudolabels.expert_bounds import ExpertExtent
from nnunet_fmabs.pseudolabels.fusion import apply_expert_labels
from nnunet_fmabs.pseudolabels.labeler import (VolumeLabels, dice, label_from_expert_planes, label_volume,
                                               label_volume_fine)
from nnunet_fmabs.pseudolabels.quality import PlaneAgreement, round_accepted
from nnunet_fmabs.pseudolabels.store import PseudoLabelStore


BEFORE_TRAINING = "before training, from the expert's planes alone"
"""The reason of the round at t = 0 (:meth:`nnunet_fmabs.campaign.campaign.Campaign.pseudo_labels_due`): with the
recipe's ``expert_prompt_growth_mm`` the labeled scans' Y_f needs no teacher, so L_sup^SAM trains on it from the
first iteration instead of waiting for the first round with a teacher (t_max / 2 in the paper's schedule)."""


def round_teacher(reason: str, teacher):
    """The teacher that prompts a round of this ``reason``: none before training (the student is untrained)."""
    return None if reason == BEFORE_TRAINING else teacher


def cross_target(source, case: str, sources: dict, shape) -> np.ndarray:
    """The labels a scan trains on: the expert's three planes (ignore elsewhere) or the dataset's own seg."""
    kind, path = sources[case]
    if kind == "dataset":
        seg = np.asarray(source.load_case(case)[1][0]).astype(np.int16)
        seg[seg < 0] = source.ignore_value
        return seg
    return CrossAnnotation.load(path).to_volume(shape, source.ignore_value)


def raw_for_prompts(source, case: str, props: dict, shape, required: bool = True) -> tuple | None:
    """FMABS_PROMPT_RESOLUTION=raw / auto: (raw image transposed like the training grid, its spacing, index
    maps) when the raw image is finer than the training grid along some axis; None otherwise (grid slices).
    A missing raw image is an error where raw slices are ``required`` (raw), the grid's slices otherwise (auto)."""
    import SimpleITK as sitk

    from nnunet_fmabs.annotation.geometry import CaseGeometry

    tf = list(source.transpose_forward)
    spacing = [float(props["spacing"][a]) for a in tf]  # nnU-Net's record of the raw spacing (array axes)
    if all(s >= g - 1e-6 for s, g in zip(spacing, source.spacing)):
        return None  # the training grid is as fine as the raw image: nothing to gain, nothing to read
    path = source.raw_image(case)
    if path is None:
        if not required:
            return None
        raise FileNotFoundError(f"FMABS_PROMPT_RESOLUTION=raw: no raw image of {case} in the dataset's imagesTr "
                                "under nnUNet_raw")
    image = sitk.ReadImage(str(path))
    raw = np.ascontiguousarray(sitk.GetArrayFromImage(image).astype(np.float32).transpose(tf))
    geometry = CaseGeometry.from_properties(props, tf, shape)
    return raw, spacing, geometry.pp_index_maps()


def expert_bounded(recipe, case: str, sources: dict) -> bool:
    """Whether the expert's planes shape this scan's boxes (a cross-labeled scan): they bound the teacher's
    boxes (the recipe's ``expert_bounds_mm``) or prompt alone (``expert_prompt_growth_mm``)."""
    return (recipe.expert_bounds_mm is not None or recipe.expert_prompt_growth_mm is not None) and case in sources \
        and sources[case][0] == "cross"


def expert_prompted(recipe, case: str, sources: dict) -> bool:
    """Whether the expert's planes alone prompt this scan (the recipe's ``expert_prompt_growth_mm``)."""
    return recipe.expert_prompt_growth_mm is not None and expert_bounded(recipe, case, sources)


def expert_extent(recipe, case: str, sources: dict) -> ExpertExtent | None:
    """The expert's planes of a scan whose boxes the recipe bounds by them (else None)."""
    return ExpertExtent.from_cross(CrossAnnotation.load(sources[case][1])) if expert_bounded(recipe, case, sources) \
        else None


def labels_without_generalist(pl_source: str, teacher_mask: np.ndarray, seg, case: str) -> VolumeLabels:
    """FMABS_PL_SOURCE's ablations: Y_f (and the three views) = the teacher's own mask (``teacher``:
    self-training, what the generalist adds is the difference) or the scan's dense truth (``ground_truth``:
    a perfect generalist, the most any Y_f can give this schedule). Nothing is prompted."""
    if pl_source == "teacher":
        fused = np.asarray(teacher_mask, bool)
    else:  # ground_truth (RunSettings refuses any other value)
        fused = np.asarray(seg[0][:]) > 0
        if fused.shape != teacher_mask.shape:
            raise ValueError(f"FMABS_PL_SOURCE=ground_truth: the labels of {case} have shape {fused.shape}, "
                             f"its image {teacher_mask.shape}")
    return VolumeLabels(views=(fused, fused, fused), fused=fused, n_prompted_slices=0)


def label_cases(campaign, teacher, index: int, partial: Path, cases=None):
    """Y_f of every training scan (or of ``cases``, a share of them) not yet in the round's ``partial``
    folder; returns the stats and the first scan's pieces for the round's picture. ``teacher`` None: the round
    before training (:data:`BEFORE_TRAINING`): only the scans the expert's planes prompt alone are prompted, the
    others get "unknown"."""
    source, settings, store = campaign.source, campaign.settings, campaign.pl_store
    generalist = campaign.generalist() if settings.pl_source == "generalist" else None
    sources = campaign.label_sources()
    done = store.done_cases(partial)
    simulation = not source.has_ignore_label
    stats = {"dice_yf": [], "dice_teacher": [], "dice_yf_bounded": [], "prompted_slices": 0, "raw_slice_cases": 0,
             "unprompted_cases": 0}
    figure_case = None
    recipe = settings.recipe()
    # judged early: a whole round (not a share of it) whose generalist Y_f the guard will judge
    judged_early = cases is None and generalist is not None and settings.pl_guard != "off" and teacher is not None
    cases = list(campaign.pool.training_cases if cases is None else cases)
    if judged_early:  # the guard's scans first (a stable sort keeps the pool's order within each group)
        cases.sort(key=lambda c: c not in sources)
    rejected = None  # the guard's verdict, once every scan it judges is done
    for case in progress(cases, f"pseudo labels, round {index}", campaign.log):
        if case in done:
            continue
        if judged_early and case not in sources and rejected is None:
            rejected = not guard_verdict(campaign, partial)[1]
            if rejected:
                campaign.log(f"pseudo-label round {index}: the guard rejects it on the expert's planes; the scans "
                             "without them are not prompted (their Y_f would not be trained on)")
        data, seg, _, props = source.load_case(case)
        teacher_mask = np.zeros(np.shape(data)[1:], bool) if teacher is None else \
            campaign.predict(teacher, data).argmax(0) > 0
        if (rejected and case not in sources) or (teacher is None and not expert_prompted(recipe, case, sources)):
            # what guard_round gives a rejected round's scan without planes; before training, nothing to prompt
            store.save_case(partial, case, np.full(teacher_mask.shape, source.ignore_value, np.uint8), teacher_mask)
            kill_point("pseudo_label_case")
            stats["unprompted_cases"] += 1
            continue
        rng = np.random.default_rng([settings.seed, 7919 + index, zlib.crc32(case.encode())])
        cache_key = (*source.cache_prefix, case)
        raw = None if settings.prompt_resolution == "grid" or generalist is None else \
            raw_for_prompts(source, case, props, teacher_mask.shape, required=settings.prompt_resolution == "raw")
        extent = expert_extent(recipe, case, sources) if generalist is not None else None
        guard_fused = None  # what the guard judges, when it is not the Y_f trained on
        if generalist is None:
            labels = labels_without_generalist(settings.pl_source, teacher_mask, seg, case)
        elif raw is None:
            if expert_prompted(recipe, case, sources):
                labels = label_from_expert_planes(np.asarray(data[0]), extent, generalist, rng, fusion=campaign.fusion,
                                                  spacing=source.spacing, recipe=recipe, cache_key=cache_key)
            else:
                labels = label_volume(np.asarray(data[0]), teacher_mask, generalist, rng, fusion=campaign.fusion,
                                      spacing=source.spacing, recipe=recipe, cache_key=cache_key, extent=extent)
            if extent is not None and settings.pl_guard != "off" and teacher is not None:
                # the guard judges the teacher-prompted Y_f
                guard_fused = label_volume(np.asarray(data[0]), teacher_mask, generalist, np.random.default_rng(
                    [settings.seed, 7919 + index, zlib.crc32(case.encode()), 1]), fusion=campaign.fusion,
                    spacing=source.spacing, recipe=recipe, cache_key=cache_key).fused
        else:
            stats["raw_slice_cases"] += 1
            labels = label_volume_fine(raw[0], teacher_mask, generalist, rng, raw[2], fine_spacing=raw[1],
                                       spacing=source.spacing, fusion=campaign.fusion, recipe=recipe,
                                       cache_key=(*cache_key, "raw"))
        y_f = labels.fused.astype(np.uint8)
        planes = None
        if case in sources:  # on the expert's slices the expert's labels replace Y_f
            cross = cross_target(source, case, sources, teacher_mask.shape)
            if teacher is not None:  # before training there is no teacher to judge against
                planes = PlaneAgreement.of_case(labels.fused if guard_fused is None else guard_fused, teacher_mask,
                                                cross, source.ignore_value).as_array()
            y_f = apply_expert_labels(labels.fused, cross, source.ignore_value)
        store.save_case(partial, case, y_f, teacher_mask, planes)
        kill_point("pseudo_label_case")
        stats["prompted_slices"] += labels.n_prompted_slices
        if simulation:  # measured for the log, never trained on
            gt = np.asarray(seg[0][:]) > 0
            stats["dice_yf"].append(dice(y_f > 0, gt))
            stats["dice_teacher"].append(dice(teacher_mask, gt))
            if extent is not None:
                stats["dice_yf_bounded"].append(stats["dice_yf"][-1])
        if figure_case is None:
            figure_case = (case, np.asarray(data[0]), teacher_mask, labels,
                           np.asarray(seg[0][:]) > 0 if simulation else None)
    return stats, figure_case


def guard_verdict(campaign, partial: Path) -> tuple[PlaneAgreement, bool]:
    """The expert's planes pooled over the round's scans done so far, and whether the guard accepts the round."""
    agreement = sum((PlaneAgreement.from_array(v) for v in campaign.pl_store.case_planes(partial).values()),
                    PlaneAgreement())
    return agreement, campaign.settings.pl_guard == "off" or round_accepted(agreement,
                                                                             campaign.settings.pl_guard_margin)


def guard_round(campaign, partial: Path) -> dict:
    """The round guard (nnunet_fmabs.pseudolabels.quality): Y_f and teacher against the expert's planes;
    a rejected round trains on the expert's planes only (Y_f kept in the files as ``y_generalist``). With
    FMABS_EXPERT_BOUNDS_MM the guard judges the teacher-prompted Y_f (:func:`label_cases`), and a rejection leaves
    the Y_f of the labeled scans, whose boxes the expert's planes bounded, as it is: the planes cannot judge a Y_f
    prompted from them, and the teacher did not prompt it."""
    store: PseudoLabelStore = campaign.pl_store
    settings, source = campaign.settings, campaign.source
    sources = campaign.label_sources()
    agreement, accepted = guard_verdict(campaign, partial)
    out = {"planes_dice_yf": agreement.dice_yf, "planes_dice_teacher": agreement.dice_teacher,
           "planes_voxels": agreement.voxels, "accepted": bool(accepted)}
    if not accepted:
        ignore = source.ignore_value
        recipe = settings.recipe()
        kept = [c for c in store.done_cases(partial) if settings.pl_source == "generalist" and
                expert_bounded(recipe, c, sources)]
        for case in store.done_cases(partial):
            if case in kept:  # prompted by the expert's planes, not by the teacher the guard judged
                continue
            with np.load(partial / f"{case}.npz") as z:
                shape = z["y"].shape
            fallback = np.full(shape, ignore, dtype=np.uint8)
            if case in sources:  # the expert's planes, unknown elsewhere
                cross = cross_target(source, case, sources, shape)
                fallback = np.where((cross >= 0) & (cross != ignore), cross, ignore).astype(np.uint8)
            store.replace_labels(partial, case, fallback)
        campaign.log(
            f"pseudo-label round REJECTED by the guard: on the expert's planes Y_f Dice {agreement.dice_yf:.3f} "
            f"< {agreement.dice_teacher - settings.pl_guard_margin:.3f} (teacher {agreement.dice_teacher:.3f}, "
            f"margin {settings.pl_guard_margin:g}); this round trains "
            "L_sup^SAM on the expert's planes only" + (f", and on the Y_f of {len(kept)} scans whose boxes the "
                                                       "expert's planes bounded" if kept else ""))
    return out


def round_figure(folder: Path, fusion: str, case, image, teacher_mask, labels, gt, summary: dict,
                 log: Callable[[str], None]) -> None:
    try:
        from nnunet_fmabs.pseudolabels.figure import save_round_figure

        guard = (f"expert planes: Dice Y_f {summary['planes_dice_yf']:.3f} vs teacher "
                 f"{summary['planes_dice_teacher']:.3f} -> round {'accepted' if summary['accepted'] else 'REJECTED'}"
                 if summary.get("planes_voxels") else "no teacher yet: the labeled scans prompted by the expert's "
                 "planes alone" if summary.get("teacher_fingerprint") == "none" else "no expert planes to judge on")
        save_round_figure(folder / f"{case}.png", image, teacher_mask, labels.views, labels.fused, gt,
                          title=f"{case}: teacher, per-view generalist masks, fused Y_f ({fusion})\n{guard}")
    except Exception as e:  # a picture must never stop training
        log(f"could not draw the pseudo-label figure: {e}")


def fingerprint(module) -> str:
    """A short digest of a network's weights (names the teacher a round was made with)."""
    import hashlib

    if module is None:
        return "none"
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def pseudo_label_round(campaign, t: int, reason: str, teacher) -> dict:
    """Run one round with ``teacher``, commit it, log it and draw it; returns the round's summary."""
    teacher = round_teacher(reason, teacher)
    teacher_fingerprint = fingerprint(teacher)
    index, partial = campaign.pl_store.begin_round(teacher_fingerprint)
    stats, figure_case = label_cases(campaign, teacher, index, partial)
    return finish_round(campaign, t, reason, index, partial, stats, figure_case, teacher_fingerprint)


def merge_stats(parts) -> dict:
    """The stats of :func:`label_cases` over several shares of the scans."""
    return {"dice_yf": [d for p in parts for d in p["dice_yf"]],
            "dice_teacher": [d for p in parts for d in p["dice_teacher"]],
            "dice_yf_bounded": [d for p in parts for d in p.get("dice_yf_bounded", [])],
            "prompted_slices": sum(p["prompted_slices"] for p in parts),
            "raw_slice_cases": sum(p["raw_slice_cases"] for p in parts),
            "unprompted_cases": sum(p.get("unprompted_cases", 0) for p in parts)}


def finish_round(campaign, t: int, reason: str, index: int, partial: Path, stats: dict, figure_case,
                 teacher_fingerprint: str) -> dict:
    """The round guard, the commit point, the log line and the picture of a round whose scans are done."""
    summary = {"prompted_slices": stats["prompted_slices"], "raw_slice_cases": stats["raw_slice_cases"],
               "teacher_fingerprint": teacher_fingerprint}
    if stats.get("unprompted_cases"):  # rejected before they were prompted (label_cases)
        summary["unprompted_cases"] = stats["unprompted_cases"]
    if stats["dice_yf"]:
        summary["mean_dice_yf"] = float(np.mean(stats["dice_yf"]))
        summary["mean_dice_teacher"] = float(np.mean(stats["dice_teacher"]))
    if stats.get("dice_yf_bounded"):  # the labeled scans' Y_f, boxes bounded by the expert's planes
        summary["mean_dice_yf_bounded"] = float(np.mean(stats["dice_yf_bounded"]))
    summary.update(guard_round(campaign, partial))
    kill_point("before_pseudo_label_commit")
    final = campaign.pl_store.commit_round(index, partial, iteration=t, reason=reason, stats=summary)
    campaign.log(f"pseudo-label round {index} ({reason}) at iteration {t}: {summary}")
    if figure_case is not None:
        round_figure(final, campaign.fusion, *figure_case, summary=summary, log=campaign.log)
    return summary
