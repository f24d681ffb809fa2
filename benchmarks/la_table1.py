"""Table 1 of FM-ABS on the real left-atrium MRI (LA), through nnU-Net's own commands.

    UA-MT layout (80 training scans)  --convert_la-->  nnU-Net raw  --nnUNetv2_plan_and_preprocess-->
    plans with the protocol's patch/batch/features  --nnUNetv2_train (per method, seed, repetition)-->
    predictions (nnUNetv2_predict on the test list, or nnU-Net's fold validation output)
    --Dice, Jaccard, 95HD, ASD-->  a markdown table shaped like the paper's Table 1, paper beside ours

Test set: ``--test-root`` (a folder holding ``test.list`` and its cases, UA-MT layout) when given;
otherwise nnU-Net fold 0's validation scans (16 of the 80; the pool is then fold 0's 64 training
scans). The 20 official LA test scans are not shipped with the project: never tune on them.

Two protocols (everything that differs from the paper is printed and written next to the table):

- ``--protocol paper``: native 0.625 mm, patch 112x112x80 (x, y, z), batch 2 cross-labeled + 2
  unlabeled, nnU-Net's U-Net (32 base features), t_max = 20,000 iterations (80 epochs x 250),
  K = 2 (9 active rounds), 8 pseudo-label rounds, generalist LiteMedSAM (its measured default
  dtype), no test-time mirroring. For a GPU (hours per method).
- ``--protocol cpu``: the first 32 of the 80 scans (fold 0: a pool of 25, 7 test scans), budget 6
  scans (18 slices, the paper's 25 %), 1.5 mm (the scans are resampled by convert_la), patch 48x48x32
  (the paper's patch in mm, rounded to nnU-Net's pooling), 16 base features, t_max = 400 iterations
  (20 epochs x 20), K = 5 (2 active rounds: 1 + 5 scans at t = 0, 200), pseudo-label rounds at 0.5 and
  0.75 of t_max, LiteMedSAM in its measured CPU dtype ("auto": bf16 where the CPU has native bf16,
  else fp32; emulated bf16 is ~11x slower than fp32 on an AVX2-only CPU). Sup cross, MT and Sup dense take 8-17 min each on one core; the
  FM-ABS methods' first LiteMedSAM round (~3,900 slices) takes about an hour on 2 cores: run them on
  a GPU (``--device cuda``, ~3 min each on an H200) or be patient.

    python benchmarks/la_table1.py --protocol cpu --dry-run
    python benchmarks/la_table1.py --protocol cpu --workdir /tmp/la_cpu
    python benchmarks/la_table1.py --protocol paper --device cuda --repetitions 3 --workdir /scratch/la_paper
    python benchmarks/la_table1.py --protocol cpu --max-cases 12 --epochs 2 --iterations 3   # pipeline check

Results: ``<workdir>/la_table1.md`` and ``<workdir>/la_table1.json`` (per run and aggregated).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_LA_ROOT = Path("/work/shared/data/LA")
PAPER_TEXT = Path(__file__).resolve().parents[2] / "shared" / "paper" / "fm-abs-miccai2024.txt"  # ../shared
PAPER_TABLE_COPY = Path(__file__).resolve().parents[1] / "tests" / "data" / "paper_table1_la.txt"  # in the repo
LA_NATIVE_MM = 0.625
DATASET_ID = 992
DATASET_NAME = "LA"
CONFIGURATION = "3d_fullres"
PAPER_PATCH_XYZ = (112, 112, 80)  # section 3, in the h5's (x, y, z) voxels at 0.625 mm
DEFAULT_METHODS = ("SupCrossTrainer", "MeanTeacherTrainer", "FMABSTrainer_RAND_MV", "FMABSTrainer_HER_MV",
                   "SupDenseTrainer")

# -- the paper's numbers -----------------------------------------------------------------------------
METRIC_KEYS = ("dice", "jaccard", "hd95", "asd")

PAPER_LA: dict[str, dict[str, tuple[float, float]]] = {
    # Table 1, LA, mean (std) over three runs; Dice/Jaccard in %, 95HD/ASD in voxels (0.625 mm)
    "Sup (cross; baseline)": {"dice": (73.68, 10.81), "jaccard": (59.36, 12.01), "hd95": (21.24, 4.90),
                              "asd": (6.14, 1.96)},
    "Sup (dense; upper bound)": {"dice": (91.56, 2.06), "jaccard": (84.50, 3.49), "hd95": (5.03, 1.62),
                                 "asd": (1.52, 0.44)},
    "MT": {"dice": (76.45, 10.99), "jaccard": (63.01, 12.65), "hd95": (19.75, 14.58), "asd": (4.56, 1.93)},
    "UA-MT": {"dice": (80.09, 10.86), "jaccard": (69.06, 12.45), "hd95": (13.47, 7.31), "asd": (4.36, 3.06)},
    "FM-ABS (UA) random": {"dice": (83.68, 3.20), "jaccard": (72.07, 4.75), "hd95": (21.62, 13.22),
                           "asd": (5.14, 1.27)},
    "FM-ABS (MV) random": {"dice": (84.93, 4.18), "jaccard": (74.04, 6.21), "hd95": (16.92, 11.52),
                           "asd": (3.89, 1.14)},
    "FM-ABS (UA) LC": {"dice": (85.11, 3.84), "jaccard": (74.27, 5.76), "hd95": (12.28, 5.08), "asd": (3.10, 1.44)},
    "FM-ABS (MV) LC": {"dice": (85.86, 4.54), "jaccard": (75.49, 6.80), "hd95": (11.23, 4.77), "asd": (3.42, 1.26)},
    "FM-ABS (UA) HE": {"dice": (85.12, 3.87), "jaccard": (74.28, 5.71), "hd95": (14.22, 9.53), "asd": (3.54, 1.23)},
    "FM-ABS (MV) HE": {"dice": (86.01, 3.04), "jaccard": (75.53, 3.04), "hd95": (11.25, 5.54), "asd": (2.88, 0.91)},
    "FM-ABS (UA) HER": {"dice": (84.97, 7.19), "jaccard": (72.95, 9.40), "hd95": (13.92, 4.73),
                        "asd": (4.22, 1.56)},
    "FM-ABS (MV) HER": {"dice": (86.14, 3.80), "jaccard": (75.85, 5.79), "hd95": (11.54, 5.14), "asd": (3.03, 0.75)},
}


@dataclass(frozen=True)
class MethodRow:
    """One row of Table 1: the paper's name, active type, labeled/unlabeled scans, labeled slices."""

    label: str
    active: str
    paper_split: str  # the paper's "Labeled/Unlabeled" column (LA)
    paper_slices: int
    kind: str  # "cross" (budget of cross-labeled scans), "semi" (cross + unlabeled), "dense"


METHOD_ROWS: dict[str, MethodRow] = {
    "SupCrossTrainer": MethodRow("Sup (cross; baseline)", "random", "20*/0", 60, "cross"),
    "SupDenseTrainer": MethodRow("Sup (dense; upper bound)", "random", "80/0", 7040, "dense"),
    "MeanTeacherTrainer": MethodRow("MT", "random", "20*/60", 60, "semi"),
    "UAMTTrainer": MethodRow("UA-MT", "random", "20*/60", 60, "semi"),
    "FMABSTrainer_RAND_UA": MethodRow("FM-ABS (UA) random", "random", "20*/60", 60, "semi"),
    "FMABSTrainer_RAND_MV": MethodRow("FM-ABS (MV) random", "random", "20*/60", 60, "semi"),
    "FMABSTrainer_LC_UA": MethodRow("FM-ABS (UA) LC", "LC", "20*/60", 60, "semi"),
    "FMABSTrainer_LC_MV": MethodRow("FM-ABS (MV) LC", "LC", "20*/60", 60, "semi"),
    "FMABSTrainer_HE_UA": MethodRow("FM-ABS (UA) HE", "HE", "20*/60", 60, "semi"),
    "FMABSTrainer_HE_MV": MethodRow("FM-ABS (MV) HE", "HE", "20*/60", 60, "semi"),
    "FMABSTrainer_HER_UA": MethodRow("FM-ABS (UA) HER", "HER", "20*/60", 60, "semi"),
    "FMABSTrainer_HER_MV": MethodRow("FM-ABS (MV) HER", "HER", "20*/60", 60, "semi"),
    # not in the paper: FM-ABS on the baselines' label schedule (whole budget at random at t = 0)
    "FMABSTrainer_RAND_MV_t0": MethodRow("FM-ABS (MV) random, all labels at t = 0", "random (t = 0)", "-", 60, "semi"),
    "FMABSTrainer_RAND_UA_t0": MethodRow("FM-ABS (UA) random, all labels at t = 0", "random (t = 0)", "-", 60, "semi"),
    # not in the paper: what of FM-ABS HER costs what (issue 12): its label schedule alone (partial CE only),
    # and FM-ABS HER without L_c
    "SupCrossTrainer_HER": MethodRow("Sup (cross), HER's label schedule", "HER", "-", 60, "cross"),
    "FMABSTrainer_HER_MV_noCons": MethodRow("FM-ABS (MV) HER without L_c", "HER", "-", 60, "semi"),
}
# rows shown even when not run (the brief's reference lines of Table 1), in the paper's order
REFERENCE_ROWS = ("SupCrossTrainer", "SupDenseTrainer", "MeanTeacherTrainer", "UAMTTrainer", "FMABSTrainer_RAND_UA",
                  "FMABSTrainer_RAND_MV", "FMABSTrainer_HER_MV")
ROW_ORDER = ("SupCrossTrainer", "SupDenseTrainer", "MeanTeacherTrainer", "UAMTTrainer", "FMABSTrainer_RAND_UA",
             "FMABSTrainer_RAND_MV", "FMABSTrainer_LC_UA", "FMABSTrainer_LC_MV", "FMABSTrainer_HE_UA",
             "FMABSTrainer_HE_MV", "FMABSTrainer_HER_UA", "FMABSTrainer_HER_MV", "FMABSTrainer_RAND_UA_t0",
             "FMABSTrainer_RAND_MV_t0", "SupCrossTrainer_HER", "FMABSTrainer_HER_MV_noCons")

_PAPER_ROW_PATTERNS = {  # Table 1 text lines (LA block) -> our row labels
    "Sup (cross; baseline)": r"^Sup \(cross; baseline\)\s+random",
    "Sup (dense; upper bound)": r"^Sup \(dense; upper bound\)\s+random",
    "MT": r"^MT \[15\]\s+random",
    "UA-MT": r"^UA-MT \[26\]\s+random",
    **{f"FM-ABS ({fu}) {act}": rf"^FM-ABS \({fu}\)[^\t]*\t{re.escape(act)}\t"
       for fu in ("UA", "MV") for act in ("random", "LC", "HE", "HER")},
}


def parse_paper_table(text: str) -> dict[str, dict[str, tuple[float, float]]]:
    """The LA rows of Table 1 from the paper's text: {row label: {metric: (mean, std)}}.

    Reads the block between the "Left Atrium (LA)" and "Brain Tumor" lines; each row ends with four
    "mean (std)" pairs (Dice, Jaccard, 95HD, ASD).
    """
    start = text.find("Left Atrium (LA)")
    end = text.find("Brain Tumor", start)
    if start < 0 or end < 0:
        raise ValueError("no LA block of Table 1 in the paper text")
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for line in text[start:end].splitlines():
        for label, pattern in _PAPER_ROW_PATTERNS.items():
            if re.search(pattern, line):
                pairs = re.findall(r"(\d+\.\d+)\s*\((\d+\.\d+)\)", line)
                if len(pairs) != 4:
                    raise ValueError(f"Table 1 row {label!r}: expected 4 'mean (std)' values in {line!r}")
                rows[label] = {k: (float(m), float(s)) for k, (m, s) in zip(METRIC_KEYS, pairs)}
    return rows


# -- protocols ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    name: str
    spacing_mm: float | None  # None: native 0.625 mm
    patch_xyz: tuple[int, int, int]  # requested patch in the h5's (x, y, z) voxels at spacing_mm
    batch_size: int  # B: cross-labeled patches per iteration (plus B unlabeled for MT / FM-ABS)
    base_features: int  # nnU-Net's U-Net: features of the first stage (doubling, capped at 10x)
    epochs: int
    iterations_per_epoch: int
    val_iterations: int
    k: int  # scans queried per active round after round 0
    pl_rounds: str  # pseudo-label rounds, fractions of t_max
    generalist: str
    generalist_dtype: str
    tta: int
    budget: int = 20  # cross-labeled scans (60 slices)
    max_cases: int | None = None  # the first N training scans of train.list (None: all 80)
    notes: tuple[str, ...] = ()
    # True: nnU-Net's raw images stay at the native 0.625 mm and nnU-Net's own preprocessing resamples them to
    # spacing_mm (plan_and_preprocess -overwrite_target_spacing), so FMABS_PROMPT_RESOLUTION=raw can prompt
    # native slices (issue 12, defect 6); False: convert_la resamples to spacing_mm before nnU-Net sees the scans
    native_raw: bool = False

    @property
    def raw_spacing_mm(self) -> float | None:
        """The spacing of nnU-Net's raw images (None: native 0.625 mm)."""
        return None if self.native_raw else self.spacing_mm

    @property
    def planner_args(self) -> list[str]:
        """Extra arguments of nnUNetv2_plan_and_preprocess: the target spacing where nnU-Net resamples."""
        return ["-overwrite_target_spacing", *[str(self.spacing_mm)] * 3] if self.native_raw else []

    @property
    def t_max(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def changes_from_paper(self) -> list[str]:
        """What this protocol changes from the paper's setting (section 3), from its actual values."""
        paper = PROTOCOLS["paper"]
        out = []
        if self.spacing_mm != paper.spacing_mm:
            out.append(f"spacing {self.spacing_mm} mm (paper {LA_NATIVE_MM})")
        if self.patch_xyz != paper.patch_xyz:
            spacing = self.spacing_mm or LA_NATIVE_MM
            mm = "x".join(f"{p * spacing:g}" for p in self.patch_xyz)
            out.append(f"patch {'x'.join(map(str, self.patch_xyz))} = {mm} mm (paper 112x112x80 = 70x70x50 mm)")
        if self.base_features != paper.base_features:
            out.append(f"{self.base_features} base features (nnU-Net's default {paper.base_features})")
        if self.t_max != paper.t_max:
            out.append(f"t_max {self.t_max} (paper {paper.t_max})")
        if self.k != paper.k:
            out.append(f"K = {self.k} (paper {paper.k})")
        n_pl = len([f for f in self.pl_rounds.split(",") if f.strip()])
        if self.pl_rounds != paper.pl_rounds:
            out.append(f"{n_pl} scheduled pseudo-label round(s) (default 8)")
        if self.max_cases != paper.max_cases:
            test = -(-self.max_cases // 5)  # nnU-Net's 5-fold split: fold 0 holds the larger share
            out.append(f"the first {self.max_cases} of the 80 training scans (fold 0: {self.max_cases - test} "
                       f"pool, {test} test)")
        if self.budget != paper.budget:
            out.append(f"budget {self.budget} scans (paper 20)")
        if self.generalist != "mobilesam":
            out.append(f"generalist {self.generalist} {self.generalist_dtype} (paper MobileSAM)")
        return out

    def describe(self) -> list[str]:
        spacing = LA_NATIVE_MM if self.spacing_mm is None else self.spacing_mm
        return [
            f"protocol {self.name}",
            f"spacing {spacing} mm isotropic" + (" (native)" if self.spacing_mm is None else
                                                  f" (resampled from {LA_NATIVE_MM} mm by "
                                                  + ("nnU-Net's preprocessing; raw images native)" if self.native_raw
                                                     else "convert_la)")),
            f"patch {self.patch_xyz[0]}x{self.patch_xyz[1]}x{self.patch_xyz[2]} (x, y, z voxels; nnU-Net may round "
            "it to its pooling), batch "
            f"{self.batch_size} cross-labeled + {self.batch_size} unlabeled (MT, FM-ABS), U-Net base features "
            f"{self.base_features}",
            f"schedule t_max = {self.t_max} iterations ({self.epochs} epochs x {self.iterations_per_epoch}), SGD lr "
            "0.01 poly 0.9",
            f"budget {self.budget} scans ({3 * self.budget} slices), K = {self.k}, pseudo-label rounds at "
            f"{self.pl_rounds} of t_max (plus one after each active round)",
            f"generalist {self.generalist} ({_dtype_words(self.generalist_dtype)}); test-time mirroring "
            f"{'on' if self.tta else 'off'}",
            "changed from the paper: " + "; ".join(self.changes_from_paper()),
            *self.notes,
        ]


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol(
        name="paper", spacing_mm=None, patch_xyz=PAPER_PATCH_XYZ, batch_size=2, base_features=32,
        epochs=80, iterations_per_epoch=250, val_iterations=50, k=2, pl_rounds="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8",
        generalist="litemedsam", generalist_dtype="auto", tta=0,
        notes=("also different from the paper in every protocol: nnU-Net's U-Net (not V-Net), nnU-Net's "
               "augmentation and sliding window (step 0.5, Gaussian weighting)",),
    ),
    "cpu": Protocol(
        name="cpu", spacing_mm=1.5, patch_xyz=(48, 48, 32), batch_size=2, base_features=16,
        epochs=20, iterations_per_epoch=20, val_iterations=2, k=5, pl_rounds="0.5,0.75",
        generalist="litemedsam", generalist_dtype="auto", tta=0, budget=6, max_cases=32,
        notes=("32 scans and a budget of 6 (the paper's 25 %): with all 80 an early teacher makes the first "
               "LiteMedSAM round ~11,000 slices, hours on 2 cores; K = 5: 1 random scan at t = 0, 5 at t = 200",
               "also different from the paper in every protocol: nnU-Net's U-Net (not V-Net), nnU-Net's "
               "augmentation and sliding window (step 0.5, Gaussian weighting)",
               "distances are computed on the 1.5 mm grid and reported in 0.625 mm voxels (mm / 0.625), "
               "beside the paper's"),
    ),
}

PROTOCOLS["cpu_native"] = replace(  # the CPU protocol's grid and schedule, nnU-Net's raw images at 0.625 mm
    PROTOCOLS["cpu"], name="cpu_native", native_raw=True,
    notes=("the cpu protocol with nnU-Net's raw images at the native 0.625 mm: nnU-Net's preprocessing "
           "resamples them to 1.5 mm (spline for the image, not convert_la's), its predictions are resampled "
           "back and scored at 0.625 mm; FMABS_PROMPT_RESOLUTION=raw prompts native slices",
           "32 scans, budget 6, K = 5: as the cpu protocol",
           "also different from the paper in every protocol: nnU-Net's U-Net (not V-Net), nnU-Net's "
           "augmentation and sliding window (step 0.5, Gaussian weighting)"))


def _dtype_words(dtype: str) -> str:
    """The generalist dtype as the plan prints it ("auto" resolved for this machine's CPU)."""
    if dtype != "auto":
        return dtype
    from nnunet_fmabs.generalists.base import cpu_supports_bf16

    return ("auto: the family's measured dtype; on CPU bf16 where the CPU has native bf16, else fp32; here "
            + ("bf16" if cpu_supports_bf16() else "fp32 (no native bf16)"))


def protocol_with(protocol: Protocol, **changes: Any) -> Protocol:
    """The protocol with command-line overrides (None values are ignored); overrides are noted."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return protocol
    note = "overridden on the command line: " + ", ".join(f"{k}={v}" for k, v in changes.items())
    return replace(protocol, notes=protocol.notes + (note,), **changes)


# -- data --------------------------------------------------------------------------------------------
def select_cases(root: Path, max_cases: int | None, test_root: Path | None) -> list[str] | None:
    """The first ``max_cases`` cases of train.list (and of the test list, at most ``max_cases``), or all."""
    if not max_cases:
        return None
    from nnunet_fmabs.data.la import read_case_list

    cases = read_case_list(root / "train.list")[:max_cases]
    if test_root is not None:
        cases += read_case_list(test_root / "test.list")[:max_cases]
    return cases


def convert(root: Path, raw: Path, protocol: Protocol, *, test_root: Path | None = None,
            cases: list[str] | None = None, dataset_id: int = DATASET_ID, progress: bool = True) -> Path:
    """LA (UA-MT layout) -> nnU-Net raw ``Dataset{id}_LA`` at the protocol's spacing (convert_la)."""
    from nnunet_fmabs.data.la import convert_la

    return convert_la(root, raw, dataset_id=dataset_id, name=DATASET_NAME, spacing=protocol.raw_spacing_mm,
                      test_root=test_root, cases=cases, progress=progress)


def patch_in_plans_axes(patch_xyz: Sequence[int], transpose_forward: Sequence[int]) -> list[int]:
    """The h5's (x, y, z) patch in nnU-Net's array axes: NIfTI arrays are (z, y, x), then transposed."""
    zyx = [int(patch_xyz[2]), int(patch_xyz[1]), int(patch_xyz[0])]
    return [zyx[i] for i in transpose_forward]


def derive_plans(plans: dict, *, patch_size: Sequence[int], batch_size: int, base_features: int,
                 plans_name: str, configuration: str = CONFIGURATION, max_features: int | None = None) -> dict:
    """A copy of nnU-Net's plans whose ``configuration`` has this patch, batch and U-Net width.

    The topology (stages, strides, kernels, and the patch rounded to the pooling) comes from
    nnU-Net's own ``get_pool_and_conv_props``, as its planner computes it; features double per stage
    from ``base_features`` up to ``max_features`` (nnU-Net: 320 for 32, i.e. 10x). The preprocessed
    data are shared with the source plans (same ``data_identifier``: spacing and normalization do
    not change), so no second preprocessing is needed.
    """
    from copy import deepcopy

    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    new = deepcopy(plans)
    conf = new["configurations"][configuration]
    spacing = conf["spacing"]
    _, strides, kernels, patch, _ = get_pool_and_conv_props(spacing, list(patch_size), 4, 999999)
    n_stages = len(strides)
    cap = max_features or 10 * base_features
    arch = conf["architecture"]["arch_kwargs"]
    arch.update({
        "n_stages": n_stages,
        "features_per_stage": [min(cap, base_features * 2 ** i) for i in range(n_stages)],
        "kernel_sizes": [list(k) for k in kernels],
        "strides": [list(s) for s in strides],
        "n_conv_per_stage": [2] * n_stages,
        "n_conv_per_stage_decoder": [2] * (n_stages - 1),
    })
    conf["patch_size"] = [int(p) for p in patch]
    conf["batch_size"] = int(batch_size)
    new["plans_name"] = plans_name
    return new


def plan_and_preprocess(dataset_id: int, env: dict, preprocessed: Path, protocol: Protocol, plans_name: str,
                        n_proc: int = 1, log=print) -> dict:
    """nnU-Net's planning and preprocessing, then the protocol's plans (``plans_name``) derived from them."""
    folder = preprocessed / f"Dataset{dataset_id:03d}_{DATASET_NAME}"
    if not (folder / "nnUNetPlans.json").is_file() or not (folder / "nnUNetPlans_3d_fullres").is_dir():
        plan_env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}  # the planner needs >= 1
        run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", CONFIGURATION,
             "-np", str(n_proc), *protocol.planner_args], plan_env, log=log)
    preprocessed_in_full(folder)
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    patch = patch_in_plans_axes(protocol.patch_xyz, plans["transpose_forward"])
    derived = derive_plans(plans, patch_size=patch, batch_size=protocol.batch_size,
                           base_features=protocol.base_features, plans_name=plans_name)
    (folder / f"{plans_name}.json").write_text(json.dumps(derived, indent=2))
    return derived


def preprocessed_in_full(folder: Path) -> None:
    """Refuse a preprocessed dataset with fewer cases than its dataset.json counts: another invocation on the same
    --workdir may still be preprocessing it (a run started then trains and tests on a split of the cases done)."""
    expected = json.loads((folder / "dataset.json").read_text()).get("numTraining")
    done = len(list((folder / "nnUNetPlans_3d_fullres").glob("*.pkl")))
    if expected is not None and done < int(expected):
        raise RuntimeError(f"{folder / 'nnUNetPlans_3d_fullres'} holds {done} of the {expected} cases its dataset.json "
                           "counts: preprocessing is unfinished (another la_table1 invocation on this --workdir may be "
                           "running it; start the next one when it trains) or was killed (delete the folder to redo it)")


# -- runs --------------------------------------------------------------------------------------------
def run(cmd: list[str], env: dict, log=print, capture: Path | None = None) -> None:
    log("$ " + " ".join(_quote(c) for c in cmd))
    if capture is None:
        subprocess.run(cmd, env=env, check=True)
        return
    capture.parent.mkdir(parents=True, exist_ok=True)
    with open(capture, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = capture.read_text()[-4000:]
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode} (log {capture}):\n{tail}")


def _quote(s: str) -> str:
    return f"'{s}'" if (" " in s or not s) else s


def effective_budget(requested: int, n_fold_train: int) -> tuple[int, str | None]:
    """The budget in scans for a fold with ``n_fold_train`` training scans, and a note when it had to shrink.

    A budget that leaves no unlabeled scan (a --max-cases subset) becomes the paper's 20 of 80 = 25 %.
    """
    if requested < n_fold_train:
        return requested, None
    budget = max(1, int(math.floor(0.25 * n_fold_train + 0.5)))
    return budget, (f"budget {requested} >= the fold's {n_fold_train} training scans: using {budget} "
                    f"(the paper's 20 of 80 = 25 %)")


def run_seeds(seeds: Sequence[int], repetitions: int) -> list[tuple[str, int]]:
    """(run name, FMABS_SEED) per run: each seed repeated ``repetitions`` times with seed + 1000 r."""
    out = []
    for seed in seeds:
        for r in range(repetitions):
            out.append((f"seed{seed}" + (f"_rep{r}" if repetitions > 1 else ""), int(seed) + 1000 * r))
    return out


def trainer_env(base: dict, protocol: Protocol, *, seed: int, budget: int, results: Path, device: str,
                embedding_cache: Path | None = None, threads: int | None = None) -> dict:
    """The environment of one nnUNetv2_train run. ``embedding_cache``: a folder shared by every run of
    the benchmark (the cache is keyed by the slice's pixels and the generalist's weights, so the second
    FM-ABS method and later seeds reuse the first one's encoder outputs; results do not depend on it)."""
    env = {k: v for k, v in base.items() if not k.startswith("FMABS_")}
    env.update({
        "nnUNet_results": str(results),
        "FMABS_BUDGET": str(budget),
        "FMABS_K": str(protocol.k),
        "FMABS_EPOCHS": str(protocol.epochs),
        "FMABS_ITERATIONS_PER_EPOCH": str(protocol.iterations_per_epoch),
        "FMABS_VAL_ITERATIONS": str(protocol.val_iterations),
        "FMABS_PL_ROUNDS": protocol.pl_rounds,
        "FMABS_GENERALIST": protocol.generalist,
        "FMABS_GENERALIST_DTYPE": protocol.generalist_dtype,
        "FMABS_SEED": str(seed),
        "FMABS_TTA": str(protocol.tta),
    })
    if embedding_cache is not None:
        env.update({"FMABS_EMBEDDING_CACHE": str(embedding_cache), "FMABS_EMBEDDING_CACHE_GB": "40"})
    if threads:
        env["FMABS_CPU_THREADS"] = str(threads)
    if device == "cpu":
        env.update({"nnUNet_compile": "0", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"})
    return env


GENERALIST_KEYS = ("FMABS_GENERALIST", "FMABS_GENERALIST_DTYPE", "FMABS_PL_ROUNDS")
CACHE_KEYS = ("FMABS_EMBEDDING_CACHE", "FMABS_EMBEDDING_CACHE_GB", "FMABS_CPU_THREADS")  # how, not what


def run_stamp(method: str, env: dict) -> dict:
    """The FMABS_* settings a finished run must match to be reused (generalist knobs only for trainers
    that run pseudo-label rounds; SupDenseTrainer reads only the schedule)."""
    stamp = {k: v for k, v in sorted(env.items()) if k.startswith("FMABS_") and k not in CACHE_KEYS}
    from nnunet_fmabs import trainers

    cls = getattr(trainers, method, None)
    if not getattr(cls, "use_sam_loss", False):
        stamp = {k: v for k, v in stamp.items() if k not in GENERALIST_KEYS}
    return stamp


def unfinished_run_to_resume(fold_dir: Path, stamp: dict) -> bool:
    """Whether ``fold_dir`` holds an unfinished run of these settings that ``nnUNetv2_train --c`` can go on with.

    A run killed mid-way (a session's end, a crash) keeps its checkpoint and its FM-ABS state; the trainer
    resumes it exactly and refuses other FMABS_* values itself. A folder whose stamp names other settings
    is an error, as for finished runs (nothing trained is thrown away)."""
    if not (fold_dir / "checkpoint_latest.pth").is_file():
        return False
    stamp_file = fold_dir / "la_table1_run.json"
    if stamp_file.is_file():
        stored = json.loads(stamp_file.read_text())["settings"]
        if stored != stamp:
            raise RuntimeError(f"{fold_dir} holds an unfinished run of {stored}, this call asks for {stamp}: "
                               "use another --workdir (runs are never overwritten)")
    return True


def cheap_generalist_path(workdir: Path) -> str:
    """PYTHONPATH entries that make the tests' cheap generalist ``box_threshold`` loadable by nnU-Net's
    subprocesses: a dummy distribution declaring the entry point (as tests/conftest.py does) and the repo."""
    from nnunet_fmabs.generalists.registry import declare_plugins

    plugins = declare_plugins(workdir / "plugins", "fmabs-bench-plugins",
                              {"box_threshold": "tests.plugins.box_generalist:BoxThresholdGeneralist"})
    return os.pathsep.join([str(plugins), str(REPO)])


def train_cmd(method: str, fold: str, plans_name: str, device: str, dataset_id: int = DATASET_ID) -> list[str]:
    return [str(BIN / "nnUNetv2_train"), str(dataset_id), CONFIGURATION, fold, "-tr", method, "-p", plans_name,
            "-device", device]


def predict_cmd(images: Path, out: Path, method: str, fold: str, plans_name: str, device: str,
                dataset_id: int = DATASET_ID, tta: int = 0) -> list[str]:
    cmd = [str(BIN / "nnUNetv2_predict"), "-i", str(images), "-o", str(out), "-d", str(dataset_id), "-c",
           CONFIGURATION, "-f", fold, "-tr", method, "-p", plans_name, "-device", device]
    if not tta:
        cmd.append("--disable_tta")
    if device == "cpu":
        cmd += ["-npp", "1", "-nps", "1"]
    return cmd


def fold_cases(preprocessed_dataset: Path, fold: str) -> tuple[list[str], list[str]]:
    """(training, validation) cases of ``fold``, as nnU-Net's trainer will use them.

    Writes ``splits_final.json`` if missing, with nnU-Net's own function and seed (what its trainer
    would write at the first run), so the budget and the test scans are known before training.
    """
    ids = sorted(p.name[: -len(".pkl")] for p in preprocessed_dataset.glob("nnUNetPlans_3d_fullres/*.pkl"))
    if fold == "all":
        return ids, ids
    splits_file = preprocessed_dataset / "splits_final.json"
    if not splits_file.is_file():
        from nnunetv2.utilities.crossval_split import generate_crossval_split

        splits_file.write_text(json.dumps(generate_crossval_split(ids, seed=12345, n_splits=5), indent=2))
    splits = json.loads(splits_file.read_text())
    train, val = list(splits[int(fold)]["train"]), list(splits[int(fold)]["val"])
    if set(train) | set(val) != set(ids):
        raise RuntimeError(f"{splits_file}: fold {fold} splits {len(set(train) | set(val))} cases, the preprocessed "
                           f"folder holds {len(ids)}: the split was written before preprocessing had finished, or for "
                           "other data; delete it (and the runs trained on it) so that nnU-Net's split of all cases "
                           "is written again")
    return train, val


def gt_subset(labels: Path, cases: Sequence[str], out: Path, file_ending: str = ".nii.gz") -> Path:
    """A folder holding (links to) only these cases' labels, for evaluate_folders."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for c in cases:
        src = labels / f"{c}{file_ending}"
        try:
            (out / src.name).symlink_to(src.resolve())
        except OSError:
            shutil.copy2(src, out / src.name)
    return out


def evaluate(pred_dir: Path, gt_dir: Path, out_json: Path) -> dict:
    from nnunet_fmabs.evaluation.metrics import evaluate_folders

    return evaluate_folders(pred_dir, gt_dir, labels=(1,), output_json=out_json)


# -- aggregation and the table ------------------------------------------------------------------------
def run_summary(results: dict) -> dict:
    """One run's numbers in Table 1's units: Dice/Jaccard %, 95HD/ASD in 0.625 mm voxels (from mm) and
    in voxels of the evaluated grid, with the per-case std."""
    cases = [v["1"] for v in results["cases"].values()]

    def stat(key, factor=1.0):
        values = np.array([np.nan if c[key] is None else c[key] for c in cases], dtype=float) * factor
        return float(np.nanmean(values)), float(np.nanstd(values))

    out = {"n_cases": len(cases)}
    out["dice"], out["dice_std"] = stat("dice", 100.0)
    out["jaccard"], out["jaccard_std"] = stat("jaccard", 100.0)
    out["hd95"], out["hd95_std"] = stat("hd95_mm", 1.0 / LA_NATIVE_MM)
    out["asd"], out["asd_std"] = stat("asd_mm", 1.0 / LA_NATIVE_MM)
    out["hd95_grid_vox"], _ = stat("hd95")
    out["asd_grid_vox"], _ = stat("asd")
    out["hd95_mm"], _ = stat("hd95_mm")
    out["asd_mm"], _ = stat("asd_mm")
    return out


def aggregate(runs: list[dict]) -> dict[str, dict]:
    """Per method: the mean over runs of each run's case mean, and the mean of the runs' per-case std
    (the paper: "mean results over three runs, standard deviations in parentheses")."""
    by_method: dict[str, list[dict]] = {}
    for r in runs:
        if r.get("summary") is not None:
            by_method.setdefault(r["method"], []).append(r["summary"])
    out = {}
    for method, summaries in by_method.items():
        agg: dict[str, Any] = {"n_runs": len(summaries), "n_cases": summaries[0]["n_cases"]}
        for key in METRIC_KEYS + ("hd95_grid_vox", "asd_grid_vox", "hd95_mm", "asd_mm"):
            agg[key] = float(np.mean([s[key] for s in summaries]))
        for key in METRIC_KEYS:
            agg[key + "_std"] = float(np.mean([s[key + "_std"] for s in summaries]))
            agg[key + "_std_over_runs"] = float(np.std([s[key] for s in summaries]))
        out[method] = agg
    return out


def _pair(mean: float | None, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "—"
    return f"{mean:.2f} ({std:.2f})" if std is not None and math.isfinite(std) else f"{mean:.2f}"


def format_table(aggregated: dict[str, dict], *, methods: Sequence[str] = (), header_lines: Sequence[str] = (),
                 paper: dict[str, dict[str, tuple[float, float]]] = PAPER_LA, budget: int = 20,
                 pool: int | None = None, test_desc: str = "") -> str:
    """Markdown table shaped like Table 1 (LA): setting columns, then for each metric ours beside the paper's.

    Rows: the paper's reference rows and every method in ``methods`` or ``aggregated``, in the paper's
    order; a method not run shows "—" in our columns ("not run").
    """
    shown = [m for m in ROW_ORDER if m in REFERENCE_ROWS or m in methods or m in aggregated]
    shown += [m for m in list(methods) + list(aggregated) if m not in shown]
    unit = {"dice": "Dice %", "jaccard": "Jaccard %", "hd95": "95HD vox", "asd": "ASD vox"}
    cols = ["Method", "Trainer", "Active", "Labeled/Unlabeled (paper)", "Labeled/Unlabeled (ours)",
            "Slices (ours)"]
    for k in METRIC_KEYS:
        cols += [f"{unit[k]} ours", f"{unit[k]} paper"]
    cols += ["runs"]
    lines = [*(f"{h}" for h in header_lines)]
    if header_lines:
        lines.append("")
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for m in shown:
        row = METHOD_ROWS.get(m, MethodRow(m, "?", "?", 0, "semi"))
        ours = aggregated.get(m)
        p = paper.get(row.label, {})
        if pool is None:
            split = "—"
            slices = "—"
        elif row.kind == "dense":
            split, slices = f"{pool}/0", "all"
        elif row.kind == "cross":
            split, slices = f"{budget}*/0", str(3 * budget)
        else:
            split, slices = f"{budget}*/{pool - budget}", str(3 * budget)
        cells = [row.label, f"`{m}`", row.active, row.paper_split, split, slices]
        for k in METRIC_KEYS:
            cells.append(_pair(ours[k], ours[k + "_std"]) if ours else "not run")
            cells.append(_pair(*p[k]) if k in p else "—")
        cells.append(str(ours["n_runs"]) if ours else "0")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "\\* cross-labeled (three orthogonal slices per scan). Ours: mean over runs of the test-case "
              "mean, in parentheses the per-case std (mean over runs). 95HD/ASD in voxels of 0.625 mm (the "
              "paper's unit; ours = mm / 0.625). Paper: Table 1, LA, mean (std) over three runs."]
    if test_desc:
        lines.append(f"Test set: {test_desc}.")
    return "\n".join(lines) + "\n"


# -- the whole benchmark -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu")
    p.add_argument("--la-root", default=str(DEFAULT_LA_ROOT), help="UA-MT layout folder with train.list")
    p.add_argument("--test-root", default=None, help="a folder with test.list and its cases (UA-MT layout)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--repetitions", type=int, default=1, help="runs per seed (FMABS_SEED = seed + 1000 r); "
                   "the paper averages 3 runs")
    p.add_argument("--workdir", default="la_table1_work")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument("--fold", default="auto", help="nnU-Net fold; auto: 'all' with --test-root, else 0")
    p.add_argument("--max-cases", type=int, default=None,
                   help="only the first N training (and test) cases (default: the protocol's; cpu 32, paper all)")
    p.add_argument("--budget", type=int, default=None, help="cross-labeled scans (default 20 = 60 slices)")
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    p.add_argument("--iterations", type=int, default=None, help="override the protocol's iterations per epoch")
    p.add_argument("--k", type=int, default=None, help="override K (scans per active round)")
    p.add_argument("--pl-rounds", default=None, help="override the pseudo-label rounds (fractions of t_max)")
    p.add_argument("--generalist", default=None, help="override the generalist; box_threshold (the tests' cheap "
                   "box-threshold plugin, no model) makes a quick pipeline check")
    p.add_argument("--generalist-dtype", default=None)
    p.add_argument("--dataset-id", type=int, default=DATASET_ID)
    p.add_argument("--np", type=int, default=1, help="processes for nnU-Net's preprocessing")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per training on CPU (FMABS_CPU_THREADS); e.g. 1 for two benchmark "
                        "processes pinned to one core each (taskset -c 0 / -c 1)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="FMABS_NAME=VALUE",
                   help="a run setting for every training (e.g. FMABS_CORE_MM=1.5; repeatable); the runs go to "
                        "results/<seed>_<tag>, so that runs with other settings stay")
    p.add_argument("--tag", default=None, help="name of those runs' folder suffix (default: from --set)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (settings and commands) and stop")
    return p


def parse_settings(items: Sequence[str]) -> dict[str, str]:
    """``--set`` items as a dict; the protocol's own keys stay the protocol's."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("FMABS_"):
            raise SystemExit(f"--set {item!r}: use FMABS_NAME=VALUE")
        if key in PROTOCOL_KEYS:
            raise SystemExit(f"--set {key}: set by the protocol (use --epochs, --k, --budget, ...)")
        out[key] = value
    return out


PROTOCOL_KEYS = ("FMABS_BUDGET", "FMABS_K", "FMABS_EPOCHS", "FMABS_ITERATIONS_PER_EPOCH", "FMABS_VAL_ITERATIONS",
                 "FMABS_SEED", "FMABS_TTA")


def resolve(args: argparse.Namespace) -> dict:
    """Everything the run needs, from the arguments (no side effect)."""
    protocol = protocol_with(PROTOCOLS[args.protocol], epochs=args.epochs, iterations_per_epoch=args.iterations,
                             k=args.k, pl_rounds=args.pl_rounds, generalist=args.generalist,
                             generalist_dtype=args.generalist_dtype, budget=args.budget)
    unknown = [m for m in args.methods if m not in METHOD_ROWS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {', '.join(METHOD_ROWS)}")
    workdir = Path(args.workdir).resolve()
    test_root = Path(args.test_root).resolve() if args.test_root else None
    fold = args.fold if args.fold != "auto" else ("all" if test_root else "0")
    plans_name = f"nnUNetPlans_fmabs{args.protocol.upper()}"
    settings = parse_settings(args.settings)
    tag = args.tag or ",".join(f"{k[6:].lower()}={v}" for k, v in settings.items())
    runs = [(f"{name}_{tag}" if tag else name, seed) for name, seed in run_seeds(args.seeds, args.repetitions)]
    return {
        "protocol": protocol, "workdir": workdir, "la_root": Path(args.la_root), "test_root": test_root,
        "fold": fold, "plans_name": plans_name, "device": args.device, "methods": list(args.methods),
        "runs": runs, "settings": settings,
        "max_cases": args.max_cases if args.max_cases is not None else protocol.max_cases,
        "dataset_id": args.dataset_id, "raw": workdir / "nnUNet_raw",
        "preprocessed": workdir / "nnUNet_preprocessed", "np": args.np,
    }


def describe_plan(cfg: dict) -> list[str]:
    protocol: Protocol = cfg["protocol"]
    workdir = cfg["workdir"]
    ds = f"Dataset{cfg['dataset_id']:03d}_{DATASET_NAME}"
    test = (f"the test list of {cfg['test_root']} (fold {cfg['fold']} trains on every training scan)"
            if cfg["test_root"] else f"nnU-Net fold {cfg['fold']}'s validation scans")
    lines = ["# LA Table 1 benchmark: plan", *protocol.describe(),
             f"data: {cfg['la_root']}" + (f" (first {cfg['max_cases']} cases)" if cfg["max_cases"] else " (all)"),
             f"test set: {test}", f"device {cfg['device']}; workdir {workdir}",
             f"methods: {', '.join(cfg['methods'])}; runs: {', '.join(f'{n} (FMABS_SEED={s})' for n, s in cfg['runs'])}",
             f"settings: {' '.join(f'{k}={v}' for k, v in cfg.get('settings', {}).items()) or 'the defaults'}",
             "", "steps:",
             f"  1. convert_la(spacing={protocol.raw_spacing_mm}) -> {cfg['raw'] / ds}",
             " ".join([f"  2. nnUNetv2_plan_and_preprocess -d {cfg['dataset_id']} -c {CONFIGURATION} -np {cfg['np']}",
                       *protocol.planner_args]) + "; derive "
             f"{cfg['plans_name']}.json (patch {protocol.patch_xyz} x,y,z, batch {protocol.batch_size}, "
             f"{protocol.base_features} base features)"]
    step = 3
    for name, seed in cfg["runs"]:
        for m in cfg["methods"]:
            lines.append(f"  {step}. [{name}] " + " ".join(_quote(c) for c in
                                                          train_cmd(m, cfg["fold"], cfg["plans_name"], cfg["device"],
                                                                    cfg["dataset_id"])))
            if cfg["test_root"]:
                lines.append("      then " + " ".join(_quote(c) for c in predict_cmd(
                    cfg["raw"] / ds / "imagesTs", workdir / "predictions" / name / m, m, cfg["fold"],
                    cfg["plans_name"], cfg["device"], cfg["dataset_id"], protocol.tta)))
            else:
                lines.append("      then score nnU-Net's validation/ output of the fold")
            step += 1
    lines.append(f"  {step}. table -> {workdir / 'la_table1.md'} and {workdir / 'la_table1.json'}")
    lines.append("environment per run: nnUNet_raw/preprocessed in the workdir, nnUNet_results = "
                 f"{workdir}/results/<run>, FMABS_BUDGET/K/EPOCHS/ITERATIONS_PER_EPOCH/VAL_ITERATIONS/PL_ROUNDS/"
                 "GENERALIST/GENERALIST_DTYPE/SEED/TTA from the protocol")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = resolve(args)
    protocol: Protocol = cfg["protocol"]
    for line in describe_plan(cfg):
        print(line)
    if args.dry_run:
        return 0

    workdir: Path = cfg["workdir"]
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "la_table1.log"

    def log(msg: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {msg}", flush=True)
        with open(log_file, "a") as f:
            f.write(f"[{stamp}] {msg}\n")

    raw, pp = cfg["raw"], cfg["preprocessed"]
    raw.mkdir(exist_ok=True)
    pp.mkdir(exist_ok=True)
    base_env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(pp),
                "nnUNet_results": str(workdir / "results")}
    if args.device == "cpu":
        base_env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    if protocol.generalist == "box_threshold":  # the tests' cheap generalist, for pipeline checks only
        extra = cheap_generalist_path(workdir)
        base_env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, os.environ.get("PYTHONPATH")) if p)
    ds_name = f"Dataset{cfg['dataset_id']:03d}_{DATASET_NAME}"
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    marker = raw / ds_name / "dataset.json"
    if not marker.is_file():
        cases = select_cases(cfg["la_root"], cfg["max_cases"], cfg["test_root"])
        log(f"converting LA ({'all' if cases is None else len(cases)} cases) at {protocol.raw_spacing_mm or LA_NATIVE_MM} mm")
        convert(cfg["la_root"], raw, protocol, test_root=cfg["test_root"], cases=cases,
                dataset_id=cfg["dataset_id"])
    else:
        log(f"reusing {raw / ds_name}")
    timings["convert_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    derived = plan_and_preprocess(cfg["dataset_id"], base_env, pp, protocol, cfg["plans_name"], n_proc=cfg["np"],
                                  log=log)
    timings["plan_preprocess_s"] = time.perf_counter() - t0
    conf = derived["configurations"][CONFIGURATION]
    arch = conf["architecture"]["arch_kwargs"]
    plan_desc = (f"plans {cfg['plans_name']}: patch {conf['patch_size']} (nnU-Net axes), batch {conf['batch_size']}, "
                 f"{arch['n_stages']} stages, features {arch['features_per_stage']}, spacing {conf['spacing']}")
    log(plan_desc)

    tr_cases, _ = fold_cases(pp / ds_name, cfg["fold"])
    n_fold_train = len(tr_cases)
    budget, budget_note = effective_budget(protocol.budget, n_fold_train)
    if budget_note:
        log(budget_note)
    pool = n_fold_train

    from nnunet_fmabs import atomic

    runs: list[dict] = []
    results_json = workdir / "la_table1.json"
    for run_name, seed in cfg["runs"]:
        results = workdir / "results" / run_name
        for method in cfg["methods"]:
            env = trainer_env(base_env, protocol, seed=seed, budget=budget, results=results, device=args.device,
                              embedding_cache=workdir / "embedding_cache", threads=args.threads)
            env.update(cfg["settings"])
            fold_dir = results / ds_name / f"{method}__{cfg['plans_name']}__{CONFIGURATION}" / f"fold_{cfg['fold']}"
            entry = {"method": method, "run": run_name, "seed": seed, "fold_dir": str(fold_dir)}
            t0 = time.perf_counter()
            try:
                stamp_file = fold_dir / "la_table1_run.json"
                stamp = run_stamp(method, env)
                if (fold_dir / "checkpoint_final.pth").is_file():
                    stored = json.loads(stamp_file.read_text()) if stamp_file.is_file() else None
                    if stored is not None and stored["settings"] != stamp:
                        raise RuntimeError(f"{fold_dir} was trained with {stored['settings']}, this call asks for "
                                           f"{stamp}: use another --workdir (finished runs are never overwritten)")
                    entry["train_s"] = stored.get("train_s") if stored else None
                    log(f"[{run_name}] {method}: reusing the finished run in {fold_dir}")
                else:
                    resume = unfinished_run_to_resume(fold_dir, stamp)
                    if not resume and fold_dir.exists():
                        shutil.rmtree(fold_dir)  # an earlier call's run that never saved a checkpoint
                    fold_dir.mkdir(parents=True, exist_ok=True)
                    atomic.write_json(stamp_file, {"settings": stamp, "train_s": None})
                    log(f"[{run_name}] {'resuming' if resume else 'training'} {method}")
                    cmd = train_cmd(method, cfg["fold"], cfg["plans_name"], args.device, cfg["dataset_id"])
                    run(cmd + (["--c"] if resume else []), env, log=log,
                        capture=workdir / "logs" / run_name / f"{method}.train.log")
                    entry["train_s"] = time.perf_counter() - t0
                    entry["resumed"] = resume
                    atomic.write_json(stamp_file, {"settings": stamp, "train_s": entry["train_s"],
                                                   "resumed": resume})
                t1 = time.perf_counter()
                if cfg["test_root"]:
                    pred = workdir / "predictions" / run_name / method
                    run(predict_cmd(raw / ds_name / "imagesTs", pred, method, cfg["fold"], cfg["plans_name"],
                                    args.device, cfg["dataset_id"], protocol.tta), env, log=log,
                        capture=workdir / "logs" / run_name / f"{method}.predict.log")
                    gt = raw / ds_name / "labelsTs"
                else:
                    pred = fold_dir / "validation"
                    gt = gt_subset(raw / ds_name / "labelsTr", fold_cases(pp / ds_name, cfg["fold"])[1],
                                   workdir / "gt_fold" / str(cfg["fold"]))
                entry["predict_s"] = time.perf_counter() - t1
                metrics = evaluate(pred, gt, workdir / "metrics" / run_name / f"{method}.json")
                entry["summary"] = run_summary(metrics)
                entry["wall_s"] = time.perf_counter() - t0
                s = entry["summary"]
                trained = "" if entry["train_s"] is None else f", training {entry['train_s'] / 60:.1f} min"
                log(f"[{run_name}] {method}: Dice {s['dice']:.2f} %, Jaccard {s['jaccard']:.2f} %, 95HD "
                    f"{s['hd95']:.2f}, ASD {s['asd']:.2f} (0.625 mm voxels), {s['n_cases']} cases{trained}")
            except (RuntimeError, subprocess.CalledProcessError, FileNotFoundError, ValueError) as e:
                entry["error"] = str(e)[-2000:]
                entry["wall_s"] = time.perf_counter() - t0
                log(f"[{run_name}] {method} FAILED: {str(e)[-1500:]}")
            runs.append(entry)
            _write_outputs(workdir, cfg, protocol, runs, timings, plan_desc, budget, pool, budget_note)
    table = _write_outputs(workdir, cfg, protocol, runs, timings, plan_desc, budget, pool, budget_note)
    print()
    print(table)
    print(f"written: {workdir / 'la_table1.md'}, {results_json}")
    return 0 if all("error" not in r for r in runs) else 1


def _write_outputs(workdir: Path, cfg: dict, protocol: Protocol, runs: list[dict], timings: dict, plan_desc: str,
                   budget: int, pool: int, budget_note: str | None) -> str:
    aggregated = aggregate(runs)
    n_cases = sorted({a["n_cases"] for a in aggregated.values()})
    scans = f"{'/'.join(map(str, n_cases))} scans, " if n_cases else ""
    test_desc = (f"{scans}test list of {cfg['test_root']}" if cfg["test_root"]
                 else f"{scans}nnU-Net fold {cfg['fold']} validation scans of {cfg['la_root']}")
    header = ["# LA, Table 1 (FM-ABS, MICCAI 2024): ours beside the paper", "",
              *(f"- {line}" for line in protocol.describe()),
              f"- {plan_desc}", f"- device {cfg['device']}; machine: {_machine()}",
              f"- data: {cfg['la_root']}" + (f", first {cfg['max_cases']} cases" if cfg["max_cases"] else ""),
              *( [f"- {budget_note}"] if budget_note else [])]
    table = format_table(aggregated, methods=cfg["methods"], header_lines=header, budget=budget, pool=pool,
                         test_desc=test_desc)
    from nnunet_fmabs import atomic

    (workdir / "la_table1.md").write_text(table)
    atomic.write_json(workdir / "la_table1.json", {
        "protocol": asdict(protocol), "plans": plan_desc, "budget": budget, "pool": pool, "fold": cfg["fold"],
        "device": cfg["device"], "machine": _machine(), "timings": timings, "runs": runs,
        "aggregated": aggregated, "paper": {k: {m: list(v) for m, v in d.items()} for k, d in PAPER_LA.items()},
    })
    return table


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    machine = f"{os.cpu_count()} cores, {model}"
    try:
        import torch

        if torch.cuda.is_available():
            machine += ", GPU " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # no torch or a broken driver: the CPU alone
        pass
    return machine


if __name__ == "__main__":
    sys.exit(main())
