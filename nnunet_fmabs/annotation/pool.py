"""The labeled pool of one run: which scans an expert cross-labeled, when, and the labels (2.1, 2.3).

It lives in the run's output folder (``<fold>/fmabs/pool``), never in nnU-Net's preprocessed folder
(several folds and trainers share that: invariant 4). ``pool.json`` is readable by a person and is
the commit point: annotation arrays are written first, each atomically, then ``pool.json`` is
replaced atomically, so a process killed at any moment leaves the old state or the new one.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nnunet_fmabs import atomic

POOL_FORMAT = 1


class PoolError(RuntimeError):
    """The pool on disk does not fit the run (other scans, a broken file, a budget overrun)."""


@dataclass(frozen=True)
class CrossAnnotation:
    """Three orthogonal label planes of one scan: ``planes[a]`` is the slice ``slices[a]`` along array axis a."""

    slices: tuple[int, int, int]
    planes: tuple[np.ndarray, np.ndarray, np.ndarray]

    def __post_init__(self) -> None:
        if len(self.slices) != 3 or len(self.planes) != 3:
            raise ValueError("a cross annotation has exactly three slices (one per axis)")

    @classmethod
    def from_dense(cls, dense: np.ndarray, slices: Sequence[int]) -> "CrossAnnotation":
        """The expert's answer when the dense label exists (simulation): the three planes of it."""
        s = tuple(int(i) for i in slices)
        planes = tuple(np.ascontiguousarray(np.take(dense, s[a], axis=a)).astype(np.uint8) for a in range(3))
        return cls(s, planes)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> "CrossAnnotation":
        """Read what :meth:`save` wrote (``slices``, ``axis0``, ``axis1``, ``axis2``)."""
        with np.load(path) as z:
            return cls(tuple(int(i) for i in z["slices"]), (z["axis0"], z["axis1"], z["axis2"]))  # type: ignore

    def save(self, path: str | Path) -> None:
        """Write the three planes atomically (an .npz)."""
        atomic.save_npz(Path(path), slices=np.asarray(self.slices), axis0=self.planes[0], axis1=self.planes[1],
                        axis2=self.planes[2])

    def check_shape(self, shape: Sequence[int], case: str) -> None:
        for a in range(3):
            expected = tuple(n for i, n in enumerate(shape) if i != a)
            if not 0 <= self.slices[a] < shape[a]:
                raise PoolError(f"{case}: slice {self.slices[a]} along axis {a} is outside 0..{shape[a] - 1}")
            if self.planes[a].shape != expected:
                raise PoolError(f"{case}: plane {a} has shape {self.planes[a].shape}, expected {expected}")

    def to_volume(self, shape: Sequence[int], ignore_value: int, dtype=np.int16) -> np.ndarray:
        """The cross-label volume: labeled on the three planes, ``ignore_value`` everywhere else."""
        vol = np.full(tuple(shape), ignore_value, dtype=dtype)
        for a in range(3):
            index = [slice(None)] * 3
            index[a] = self.slices[a]
            vol[tuple(index)] = self.planes[a]
        return vol


class LabeledPool:
    """Budget, rounds and cross annotations of one run, persisted atomically under ``folder``."""

    def __init__(self, folder: str | Path, state: dict):
        self.folder = Path(folder)
        self.state = state
        self._cache: dict[str, CrossAnnotation] = {}

    # -- creation and persistence -------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, budget: int, training_cases: Iterable[str]) -> "LabeledPool":
        """Load the run's pool, or create an empty one; refuse a pool made for other scans."""
        folder = Path(folder)
        training_cases = sorted(training_cases)
        path = folder / "pool.json"
        if path.is_file():
            try:
                state = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise PoolError(f"{path} is not valid JSON ({e}); the previous state is lost only if "
                                "this file was edited by hand") from None
            if state.get("format") != POOL_FORMAT:
                raise PoolError(f"{path} has format {state.get('format')!r}; this version reads {POOL_FORMAT}")
            if state.get("training_cases") != training_cases:
                raise PoolError(
                    f"{path} belongs to a run on other training scans "
                    f"({len(state.get('training_cases', []))} stored, {len(training_cases)} now). "
                    "Was the split or the dataset changed? Use a fresh output folder for a new run."
                )
            if state.get("budget") != budget:
                raise PoolError(f"{path}: the run's budget is {state.get('budget')} scans, now {budget}")
            return cls(folder, state)
        if budget > len(training_cases):
            raise PoolError(f"budget of {budget} scans is larger than the {len(training_cases)} training scans")
        if budget < 1:
            raise PoolError(f"budget must be at least one scan, got {budget}")
        state = {"format": POOL_FORMAT, "budget": budget, "training_cases": training_cases,
                 "rounds": [], "cases": {}}
        pool = cls(folder, state)
        pool._commit()
        return pool

    def _commit(self, state: dict | None = None) -> None:
        """Write ``state`` (default: the current one); only once it is on disk does it become current."""
        state = self.state if state is None else state
        atomic.write_json(self.folder / "pool.json", state)
        self.state = state

    # -- queries -------------------------------------------------------------------------------
    @property
    def budget(self) -> int:
        return int(self.state["budget"])

    @property
    def training_cases(self) -> list[str]:
        return list(self.state["training_cases"])

    @property
    def rounds(self) -> list[dict]:
        return self.state["rounds"]

    @property
    def labeled_cases(self) -> list[str]:
        return sorted(self.state["cases"])

    @property
    def unlabeled_cases(self) -> list[str]:
        labeled = set(self.state["cases"]) | set(self.pending_cases)
        return [c for c in self.training_cases if c not in labeled]

    @property
    def pending_round(self) -> dict | None:
        pending = [r for r in self.rounds if r["status"] == "pending"]
        return pending[0] if pending else None

    @property
    def pending_cases(self) -> list[str]:
        r = self.pending_round
        return list(r["cases"]) if r else []

    @property
    def remaining_budget(self) -> int:
        return self.budget - len(self.state["cases"]) - len(self.pending_cases)

    @property
    def n_labeled_slices(self) -> int:
        return 3 * len(self.state["cases"])

    def annotation(self, case: str) -> CrossAnnotation:
        if case not in self._cache:
            info = self.state["cases"][case]
            self._cache[case] = CrossAnnotation.load(self.folder / info["file"])
        return self._cache[case]

    # -- changes (each one committed before it returns) ----------------------------------------
    def add_query(self, cases: Sequence[str], slices: dict[str, Sequence[int]], *, expert: str,
                  sampler: str, iteration: int, scores: dict[str, float] | None = None) -> dict:
        """Record the scans asked of the expert in a new round (status ``pending``)."""
        if self.pending_round is not None:
            raise PoolError(f"round {self.pending_round['round']} is still waiting for the expert")
        cases = list(cases)
        unknown = [c for c in cases if c not in self.training_cases]
        already = [c for c in cases if c in self.state["cases"]]
        if unknown or already or len(set(cases)) != len(cases):
            raise PoolError(f"cannot query {cases}: unknown {unknown}, already labeled {already}")
        if len(cases) > self.remaining_budget:
            raise PoolError(f"querying {len(cases)} scans would exceed the budget ({self.remaining_budget} left)")
        entry = {
            "round": len(self.rounds), "status": "pending", "expert": expert, "sampler": sampler,
            "iteration": int(iteration), "cases": cases,
            "slices": {c: [int(i) for i in slices[c]] for c in cases},
            "scores": {c: float(v) for c, v in (scores or {}).items()},
            "queried_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        new = copy.deepcopy(self.state)
        new["rounds"].append(entry)
        self._commit(new)
        return self.pending_round

    def answer(self, annotations: dict[str, CrossAnnotation], shapes: dict[str, Sequence[int]]) -> dict:
        """Store the expert's labels for every scan of the pending round, then close the round."""
        entry = self.pending_round
        if entry is None:
            raise PoolError("no round is waiting for labels")
        missing = [c for c in entry["cases"] if c not in annotations]
        if missing:
            raise PoolError(f"round {entry['round']}: no labels for {missing}")
        no_shape = [c for c in entry["cases"] if c not in shapes]
        if no_shape:
            raise PoolError(f"round {entry['round']}: no image shape given for {no_shape}")
        for c in entry["cases"]:
            ann = annotations[c]
            if not all(isinstance(p, np.ndarray) for p in ann.planes):
                raise PoolError(f"{c}: annotation planes must be numpy arrays")
            ann.check_shape(shapes[c], c)
        new = copy.deepcopy(self.state)
        new_entry = new["rounds"][entry["round"]]
        for c in entry["cases"]:  # arrays first ...
            ann = annotations[c]
            rel = f"annotations/{c}.npz"
            ann.save(self.folder / rel)
            new["cases"][c] = {"round": entry["round"], "expert": entry["expert"],
                               "slices": list(ann.slices), "file": rel}
        new_entry["status"] = "answered"  # ... then the commit point
        new_entry["slices"] = {c: list(annotations[c].slices) for c in entry["cases"]}
        new_entry["answered_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self._commit(new)
        for c in entry["cases"]:
            self._cache[c] = annotations[c]
        return new_entry

    def add_dataset_labels(self, cases: Sequence[str]) -> dict:
        """Round 0 of a barely labeled dataset: the scans whose own labels (nnU-Net's seg with its
        ignore label) hold annotated voxels. Their labels stay in nnU-Net's preprocessed files."""
        if self.rounds:
            raise PoolError("dataset labels can only form the first round")
        cases = sorted(cases)
        if len(cases) > self.budget:
            raise PoolError(f"the dataset already labels {len(cases)} scans, more than the budget of {self.budget}")
        new = copy.deepcopy(self.state)
        new["rounds"].append({"round": 0, "status": "answered", "expert": "dataset", "sampler": "dataset",
                              "iteration": 0, "cases": cases, "slices": {}, "scores": {},
                              "queried_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "answered_at": time.strftime("%Y-%m-%d %H:%M:%S")})
        for c in cases:
            new["cases"][c] = {"round": 0, "expert": "dataset", "slices": None, "file": None}
        self._commit(new)
        return new["rounds"][0]

    # -- reading for people -------------------------------------------------------------------
    def summary(self) -> str:
        lines = [f"pool: {len(self.state['cases'])} of {self.budget} scans labeled "
                 f"({self.n_labeled_slices} slices), {len(self.training_cases)} training scans"]
        for r in self.rounds:
            lines.append(f"  round {r['round']:2d} [{r['status']}] {r['expert']:9s} sampler={r['sampler']:6s} "
                         f"iteration={r['iteration']}: {', '.join(r['cases'])}")
        return "\n".join(lines)
