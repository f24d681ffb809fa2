"""A digest of what a run must never lose: pool rounds, annotations and pseudo-label rounds.

Two runs with the same seed, one killed and resumed any number of times, must have equal digests
(used by the crash harness and its tests).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def npz_digest(path: Path) -> str:
    """SHA-256 of the arrays in an .npz (not of the zip, whose timestamps differ between writes)."""
    h = hashlib.sha256()
    with np.load(path) as z:
        for k in sorted(z.files):
            h.update(k.encode())
            h.update(np.ascontiguousarray(z[k]).tobytes())
    return h.hexdigest()


def run_state(fold_dir: str | Path) -> dict:
    folder = Path(fold_dir) / "fmabs"
    pool = json.loads((folder / "pool" / "pool.json").read_text())
    rounds = [(r["round"], r["status"], r["cases"], r["slices"]) for r in pool["rounds"]]
    annotations = {c: npz_digest(folder / "pool" / info["file"]) if info["file"] else "dataset"
                   for c, info in pool["cases"].items()}
    pseudo = []
    state_file = folder / "pseudolabels" / "state.json"
    if state_file.is_file():
        for r in json.loads(state_file.read_text())["rounds"]:
            d = folder / "pseudolabels" / r["dir"]
            pseudo.append((r["iteration"], {p.stem: npz_digest(p) for p in sorted(d.glob("*.npz"))}))
    return {"rounds": rounds, "annotations": annotations, "pseudo_labels": pseudo}
