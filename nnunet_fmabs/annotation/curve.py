"""The active-learning curve of a run: student Dice on the validation scans vs labeled slices (2.3)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from nnunet_fmabs import atomic
from nnunet_fmabs.figures import figure_style, save_figure

FIELDS = ("round", "iteration", "labeled_scans", "labeled_slices", "val_dice")


def read_curve(folder: Path) -> list[dict]:
    path = Path(folder) / "active_learning_curve.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_curve_point(folder: Path, point: dict) -> None:
    """Add one point (replacing one at the same iteration, as a resumed run re-measures) and redraw."""
    folder = Path(folder)
    rows = [r for r in read_curve(folder) if int(r["iteration"]) != int(point["iteration"])]
    rows.append({k: point[k] for k in FIELDS})
    rows.sort(key=lambda r: int(r["iteration"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_with(folder / "active_learning_curve.csv", lambda p: p.write_text(buf.getvalue()))
    plot_curve(rows, folder / "active_learning_curve.png")


def curve_figure(rows: list[dict]):
    """The figure (call inside :func:`~nnunet_fmabs.figures.figure_style`)."""
    import matplotlib.pyplot as plt

    x = [int(r["labeled_slices"]) for r in rows]
    y = [float(r["val_dice"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y, "o-")
    for r, xi, yi in zip(rows, x, y):
        ax.annotate(f"t={r['iteration']}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                    annotation_clip=True)
    ax.set_xlabel("labeled slices (3 per queried scan)")
    ax.set_ylabel("student Dice, validation scans")
    ax.set_ylim(0, 1.08)  # room above 1 for the labels of the points
    ax.margins(x=0.12)
    ax.grid(alpha=0.3)
    ax.set_title("Active-learning curve")
    return fig


def plot_curve(rows: list[dict], path: Path) -> None:
    with figure_style():
        save_figure(curve_figure(rows), path, dpi=100)
