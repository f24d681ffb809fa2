"""``nnunet-fmabs status RUN_DIR --png OUT``: a picture of the queried slices of a run (2.1, 2.3).

One row per queried scan, in round order: its three cross-labeled planes (preprocessed array axes 0, 1,
2) with the expert's labels drawn over the preprocessed image, as the student was trained on them;
scans still waiting for the expert show their proposed slices, unlabeled. Without the preprocessed
cases (``nnUNet_preprocessed`` unset) the labels are drawn on black. Reading only.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnunet_fmabs.annotation.pool import LabeledPool
from nnunet_fmabs.annotation.status import POOL_FILE, RunLayout, RunLayoutError, RunStateError, _read_json
from nnunet_fmabs.figures import figure_style, save_figure

MAX_ROWS = 40
LABEL_COLOURS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55")


def queried_scans(state: dict) -> list[dict]:
    """Every queried scan in round order: case, round, sampler, iteration, slices, answered or not."""
    out = []
    for r in state.get("rounds", []):
        for case in r.get("cases", []):
            out.append({"case": case, "round": r.get("round"), "sampler": r.get("sampler"),
                        "iteration": r.get("iteration"), "answered": case in state.get("cases", {}),
                        "slices": [int(i) for i in (state.get("cases", {}).get(case, {}).get("slices")
                                                    or r.get("slices", {}).get(case) or [])]})
    return out


def _image(layout: RunLayout | None, case: str) -> np.ndarray | None:
    if layout is None:
        return None
    try:
        data = layout.load_case(case)[0]
    except (RunLayoutError, FileNotFoundError, OSError, KeyError):
        return None
    return np.asarray(data[0], dtype=np.float32)


def overview_figure(rows: list[dict], images: dict, pool: LabeledPool, title: str):
    """The figure (call inside :func:`~nnunet_fmabs.figures.figure_style`)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.3 * len(rows) + 0.7), squeeze=False)
    for i, row in enumerate(rows):
        case, slices = row["case"], row["slices"]
        annotation = pool.annotation(case) if row["answered"] else None
        image = images.get(case)
        for a in range(3):
            ax = axes[i][a]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"array axis {a}")
            if len(slices) != 3:
                continue
            label = annotation.planes[a] if annotation is not None else None
            if image is not None:
                plane = np.take(image, slices[a], axis=a)
                lo, hi = np.percentile(plane, [0.5, 99.5])
                ax.imshow(plane.T, cmap="gray", origin="lower", vmin=lo, vmax=hi if hi > lo else lo + 1)
            elif label is not None:
                ax.imshow(np.zeros(label.shape).T, cmap="gray", origin="lower", vmin=0, vmax=1)
            if label is not None and np.any(label > 0):
                shown = np.ma.masked_less_equal(label.astype(float), 0)
                ax.imshow(shown.T, cmap=ListedColormap(LABEL_COLOURS), vmin=1, vmax=len(LABEL_COLOURS) + 1,
                          origin="lower", alpha=0.45, interpolation="nearest")
            ax.set_xlabel(f"slice {slices[a]}", labelpad=2)
        state = "labeled" if row["answered"] else "waiting for the expert"
        axes[i][0].set_ylabel(f"{case}\nround {row['round']}, {row['sampler']}, t={row['iteration']}\n{state}",
                              fontsize=7)
    fig.suptitle(title)
    return fig


def save_overview(run_dir: str | os.PathLike, out: str | os.PathLike, *,
                  preprocessed_root: str | os.PathLike | None = None, max_rows: int = MAX_ROWS) -> str:
    """Draw the queried slices of the fold folder ``run_dir`` to the PNG ``out``; returns a one-line summary."""
    run_dir = Path(run_dir)
    pool_path = run_dir / POOL_FILE
    if not pool_path.is_file():
        raise RunStateError(f"{run_dir} has no FM-ABS pool ({POOL_FILE} is missing); give the fold folder of an "
                            "FM-ABS run")
    state = _read_json(pool_path, "pool")
    pool = LabeledPool(pool_path.parent, state)
    rows = queried_scans(state)
    if not rows:
        raise RunStateError(f"{pool_path}: no scan has been queried yet; nothing to draw")
    try:
        layout: RunLayout | None = RunLayout.of(run_dir, preprocessed_root)
    except RunLayoutError:
        layout = None
    shown = rows[:max_rows]
    images = {r["case"]: _image(layout, r["case"]) for r in shown}
    n_images = sum(v is not None for v in images.values())
    title = (f"{run_dir.parent.parent.name}: {len(state.get('cases', {}))} of {state.get('budget')} scans labeled, "
             f"3 planes each" + (f" (first {len(shown)} of {len(rows)} shown)" if len(shown) < len(rows) else ""))
    with figure_style():
        save_figure(overview_figure(shown, images, pool, title), out, dpi=90)
    note = "" if n_images == len(shown) else (
        f"; {len(shown) - n_images} without their image (set nnUNet_preprocessed to draw the scans under the labels)")
    return f"wrote {out}: {len(shown)} queried scans{note}"
