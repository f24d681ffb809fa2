"""``nnunet-fmabs status RUN_DIR``: the labeled pool, the rounds and the pending queries of a run.

RUN_DIR is an nnU-Net fold output folder; the run's FM-ABS state lives in ``RUN_DIR/fmabs``:
``pool/pool.json`` (the pool) and ``queries/round_NN/queries.json`` (files written for a person).
Reading only: nothing under RUN_DIR is changed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nnunet_fmabs.annotation.human import QUERIES_FILE, round_folder

POOL_FILE = Path("fmabs") / "pool" / "pool.json"
QUERIES_ROOT = Path("fmabs") / "queries"


class RunStateError(FileNotFoundError):
    """RUN_DIR holds no (readable) FM-ABS state."""


class RunLayoutError(RuntimeError):
    """The nnU-Net files around RUN_DIR (plans, dataset.json, preprocessed cases) are missing or unreadable."""


@dataclass
class RunLayout:
    """Where nnU-Net keeps what a fold folder was trained from: the plans and dataset.json it copied beside
    the fold folders, the configuration in the results folder's name, the preprocessed cases."""

    run_dir: Path
    dataset: str
    configuration: str
    plans: dict
    dataset_json: dict
    preprocessed_root: Path | None

    @classmethod
    def of(cls, run_dir: str | os.PathLike, preprocessed_root: str | os.PathLike | None = None) -> "RunLayout":
        from nnunetv2.paths import nnUNet_preprocessed

        run_dir = Path(run_dir)
        trainer_dir = run_dir.parent
        plans_path, dataset_json_path = trainer_dir / "plans.json", trainer_dir / "dataset.json"
        for path in (plans_path, dataset_json_path):
            if not path.is_file():
                raise RunLayoutError(f"{path} is missing: nnU-Net writes it beside the fold folders of every run")
        parts = trainer_dir.name.split("__")
        if len(parts) != 3:
            raise RunLayoutError(f"{trainer_dir.name}: not an nnU-Net results folder name "
                                 "(Trainer__Plans__configuration)")
        root = preprocessed_root or nnUNet_preprocessed
        return cls(run_dir, trainer_dir.parent.name, parts[2], _read_json(plans_path, "plans"),
                   _read_json(dataset_json_path, "dataset.json"), Path(root) if root else None)

    @property
    def transpose_forward(self) -> list[int]:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        return PlansManager(self.plans).transpose_forward

    @property
    def preprocessed_folder(self) -> Path | None:
        """The run's preprocessed cases (None without nnUNet_preprocessed)."""
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        if self.preprocessed_root is None:
            return None
        config = PlansManager(self.plans).get_configuration(self.configuration)
        return self.preprocessed_root / self.dataset / config.data_identifier

    def require_preprocessed(self, why: str) -> Path:
        folder = self.preprocessed_folder
        if folder is None or not folder.is_dir():
            raise RunLayoutError(f"the run's preprocessed cases are needed {why}: "
                                 f"{folder or '$nnUNet_preprocessed/' + self.dataset} does not exist "
                                 "(set nnUNet_preprocessed)")
        return folder

    def load_case(self, case: str):
        """nnU-Net's ``(data, seg, seg_prev, properties)`` of one preprocessed case."""
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        folder = self.require_preprocessed(f"for {case}")
        return infer_dataset_class(str(folder))(str(folder), [case]).load_case(case)


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunStateError(f"{path}: the {what} is not valid JSON ({e})") from None


def format_status(run_dir: str | os.PathLike) -> str:
    """A person's view of a run: budget, labeled scans and slices, every round, pending queries."""
    run_dir = Path(run_dir)
    pool_path = run_dir / POOL_FILE
    if not pool_path.is_file():
        where = "does not exist" if not run_dir.exists() else f"has no FM-ABS state ({POOL_FILE} is missing)"
        raise RunStateError(
            f"{run_dir} {where}. Give the fold folder of an FM-ABS run, e.g. "
            "$nnUNet_results/Dataset042_Name/FMABSTrainer_HER_MV__nnUNetPlans__3d_fullres/fold_0")
    state = _read_json(pool_path, "pool")
    budget = int(state.get("budget", 0))
    cases = state.get("cases", {})
    rounds = state.get("rounds", [])
    training = state.get("training_cases", [])
    pending = [r for r in rounds if r.get("status") == "pending"]
    n_pending = sum(len(r.get("cases", [])) for r in pending)
    lines = [
        f"run: {run_dir}",
        f"budget: {budget} scans ({3 * budget} slices) of {len(training)} training scans",
        f"labeled: {len(cases)} scans ({3 * len(cases)} slices)"
        + (f", {n_pending} waiting for the expert" if n_pending else "")
        + f", {budget - len(cases) - n_pending} left in the budget",
    ]
    if cases:
        lines.append("labeled scans: " + ", ".join(
            f"{c} (round {info.get('round')}, slices {info.get('slices')})" for c, info in sorted(cases.items())))
    if rounds:
        header = ("round", "status", "expert", "sampler", "iteration", "scans")
        rows = [(str(r.get("round")), str(r.get("status")), str(r.get("expert")), str(r.get("sampler")),
                 str(r.get("iteration")), ", ".join(r.get("cases", []))) for r in rounds]
        widths = [max(len(x) for x in col) for col in zip(header, *rows)]
        lines.append("rounds:")
        for row in (header, *rows):
            lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip())
    else:
        lines.append("rounds: none yet")
    lines += _pseudo_label_lines(run_dir)
    for r in pending:
        lines += _pending_lines(run_dir, r)
    return "\n".join(lines)


def _pseudo_label_lines(run_dir: Path) -> list[str]:
    """The committed pseudo-label rounds: when, how many slices, the expert-plane check and its verdict."""
    path = run_dir / "fmabs" / "pseudolabels" / "state.json"
    if not path.parent.is_dir():
        return []
    rounds = _read_json(path, "pseudo-label state").get("rounds", []) if path.is_file() else []
    if not rounds:
        return ["pseudo-label rounds: none yet"]

    def number(value) -> str:
        return "-" if value is None or value != value else f"{value:.3f}"

    header = ("round", "iteration", "slices", "planes: Y_f", "teacher", "trained on", "sim: Y_f", "teacher")
    rows = [(str(r.get("round")), str(r.get("iteration")), str(r.get("prompted_slices", "-")),
             number(r.get("planes_dice_yf")), number(r.get("planes_dice_teacher")),
             "-" if "accepted" not in r else ("Y_f" if r["accepted"] else "expert planes (rejected)"),
             number(r.get("mean_dice_yf")), number(r.get("mean_dice_teacher"))) for r in rounds]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    return ["pseudo-label rounds (Dice on the expert's planes; sim: against the dense truth, never trained on):",
            *("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in (header, *rows))]


def _pending_lines(run_dir: Path, entry: dict) -> list[str]:
    folder = round_folder(run_dir / QUERIES_ROOT, entry["round"])
    path = folder / QUERIES_FILE
    head = f"pending queries, round {entry['round']} ({entry.get('expert')}):"
    if not path.is_file():
        return [head, "  no files written yet: the trainer writes them (human expert) or answers the round "
                "(simulated expert) when it resumes"]
    queries = _read_json(path, "queries file")
    lines = [head]
    for case in entry.get("cases", []):
        scan = queries.get("scans", {}).get(case, {})
        planes = ", ".join(f"{p['view']} {p['itk_axis']}={p['index']}" for p in scan.get("planes", []))
        lines.append(f"  edit {scan.get('file', folder / case)}" + (f"  ({planes})" if planes else ""))
        if scan.get("raw_image"):
            lines.append(f"       image {scan['raw_image']}")
    allowed = queries.get("allowed_labels")
    if allowed:
        lines.append(f"  allowed labels 0..{max(allowed)}; only the three listed slices are read; save in place")
    lines.append(f"  details: {path}")
    if queries.get("resume_command"):
        lines.append(f"  then resume with: {queries['resume_command']}")
    return lines
