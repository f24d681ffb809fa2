"""A picture of one pseudo-label round, like the paper's Fig. 2: per view, image, teacher mask,
the generalist's mask of that view, the fused Y_f and, in simulation, the ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_fmabs.figures import figure_style, save_figure, wrap

VIEW_NAMES = ("view 0", "view 1", "view 2")


def round_figure(image: np.ndarray, teacher: np.ndarray, views, fused: np.ndarray,
                 gt: np.ndarray | None = None, title: str = ""):
    """The figure (call inside :func:`~nnunet_fmabs.figures.figure_style`)."""
    import matplotlib.pyplot as plt

    columns = [("teacher P^t", None), ("generalist, this view", "view"), ("fused Y_f", fused)]
    if gt is not None:
        columns.append(("ground truth (not trained on)", gt))
    fig, axes = plt.subplots(3, len(columns), figsize=(3 * len(columns), 9), squeeze=False)
    for axis in range(3):
        index = _middle_of(teacher if teacher.any() else fused, axis)
        img = np.take(image, index, axis=axis)
        for col, (name, mask) in enumerate(columns):
            if mask is None:
                mask = teacher
            elif isinstance(mask, str):
                mask = views[axis]
            ax = axes[axis][col]
            ax.imshow(img.T, cmap="gray", origin="lower")
            m = np.take(mask, index, axis=axis).T
            ax.contour(m.astype(float), levels=[0.5], colors=["#ff3b30"], linewidths=1.0, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if axis == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(f"{VIEW_NAMES[axis]}, slice {index}")
    fig.suptitle(wrap(title, 16 * len(columns)))
    return fig


def save_round_figure(path: Path, image: np.ndarray, teacher: np.ndarray, views, fused: np.ndarray,
                      gt: np.ndarray | None = None, title: str = "") -> None:
    with figure_style():
        save_figure(round_figure(image, teacher, views, fused, gt, title), path, dpi=80)


def _middle_of(mask: np.ndarray, axis: int) -> int:
    others = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(mask.any(axis=others))
    return int(present[len(present) // 2]) if len(present) else mask.shape[axis] // 2
