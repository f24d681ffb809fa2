"""Pseudo-label rounds of one run, on disk under ``<fold>/fmabs/pseudolabels`` (invariants 3, 4).

A round is written into ``round_NN.partial/`` scan by scan (each file atomic), then the folder is
renamed to ``round_NN/`` and ``state.json`` is replaced atomically: that is the commit point. A round
killed half way is redone on resume, reusing the scans it finished if the teacher is the same
(the folder records the teacher's fingerprint).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from nnunet_fmabs import atomic


class PseudoLabelStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "state.json"
        self.state = json.loads(path.read_text()) if path.is_file() else {"rounds": []}

    @property
    def rounds(self) -> list[dict]:
        return self.state["rounds"]

    @property
    def latest_dir(self) -> Path | None:
        return self.folder / self.rounds[-1]["dir"] if self.rounds else None

    @property
    def last_iteration(self) -> int | None:
        return self.rounds[-1]["iteration"] if self.rounds else None

    def begin_round(self, teacher_fingerprint: str, owner: bool = True) -> tuple[int, Path]:
        """A fresh (or resumable) partial folder for the next round. The ``owner`` (the one process, or DDP's
        rank 0 before the others join) also drops the temporary files of writers killed mid-write: they were
        never renamed into a scan's file and would otherwise be committed with the round."""
        index = len(self.rounds)
        partial = self.folder / f"round_{index:02d}.partial"
        marker = partial / "teacher.txt"
        if partial.exists() and (not marker.is_file() or marker.read_text() != teacher_fingerprint):
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        if owner:
            atomic.drop_leftovers(partial)
        if not marker.is_file():
            atomic.write_with(marker, lambda p: p.write_text(teacher_fingerprint))
        return index, partial

    @staticmethod
    def done_cases(partial: Path) -> set[str]:
        return {p.name[: -len(".npz")] for p in partial.glob("*.npz") if not p.name.startswith(".")}

    @staticmethod
    def save_case(partial: Path, case: str, y_f: np.ndarray, teacher: np.ndarray | None = None,
                  planes: np.ndarray | None = None) -> None:
        """``y``: what training reads (uint8); ``teacher``: the teacher mask P^t that prompted it (kept
        for pictures and ``benchmarks/pseudolabel_quality.py``); ``planes``: the case's agreement with the
        expert's planes (:class:`~nnunet_fmabs.pseudolabels.quality.PlaneAgreement` as an array)."""
        arrays = {"y": y_f.astype(np.uint8)}
        if teacher is not None:
            arrays["teacher"] = np.packbits(np.asarray(teacher, dtype=bool))
            arrays["teacher_shape"] = np.asarray(np.shape(teacher), dtype=np.int64)
        if planes is not None:
            arrays["planes"] = np.asarray(planes, dtype=np.int64)
        atomic.save_npz(partial / f"{case}.npz", **arrays)

    @staticmethod
    def case_planes(partial: Path) -> dict[str, np.ndarray]:
        """The expert-plane agreement saved with each case of a round that has it."""
        out = {}
        for path in sorted(partial.glob("*.npz")):
            with np.load(path) as z:
                if "planes" in z:
                    out[path.stem] = z["planes"]
        return out

    @staticmethod
    def replace_labels(partial: Path, case: str, y: np.ndarray) -> None:
        """Train on ``y`` instead of the generalist's Y_f (kept as ``y_generalist``); idempotent. A case whose
        labels already are ``y`` (one the guard rejected before it was prompted) is left as it is."""
        path = partial / f"{case}.npz"
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        if np.array_equal(arrays["y"], y):
            return
        arrays.setdefault("y_generalist", arrays["y"])
        arrays["y"] = y.astype(np.uint8)
        atomic.save_npz(path, **arrays)

    @staticmethod
    def load_teacher(path: Path) -> np.ndarray | None:
        """The teacher mask saved with a case's Y_f (None for rounds written before it was kept)."""
        with np.load(path) as z:
            if "teacher" not in z:
                return None
            shape = tuple(int(i) for i in z["teacher_shape"])
            return np.unpackbits(z["teacher"], count=int(np.prod(shape))).reshape(shape).astype(bool)

    def commit_round(self, index: int, partial: Path, *, iteration: int, reason: str, stats: dict) -> Path:
        final = self.folder / f"round_{index:02d}"
        if final.exists():  # left by a kill between the rename and state.json: not committed
            shutil.rmtree(final)
        partial.rename(final)
        atomic._fsync_dir(self.folder)
        entry = {"round": index, "dir": final.name, "iteration": int(iteration), "reason": reason,
                 "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), **stats}
        self.state = {"rounds": self.rounds + [entry]}
        atomic.write_json(self.folder / "state.json", self.state)
        return final
