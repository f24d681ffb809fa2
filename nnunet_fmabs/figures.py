"""Our PNGs (loss terms, active-learning curve, pseudo-label rounds) in their own style.

nnU-Net sets a global seaborn style with a large font scale when it draws its progress plot;
our small figures are drawn inside :func:`figure_style` (matplotlib's defaults and a few sizes
of ours) so that no label is cut off, whatever style is active around them.
"""
from __future__ import annotations

import textwrap
from contextlib import contextmanager
from pathlib import Path

from nnunet_fmabs import atomic

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.titlesize": 10,
}


@contextmanager
def figure_style():
    """``pyplot`` (Agg) with matplotlib's default style and :data:`STYLE`, restored on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context("default"), matplotlib.rc_context(STYLE):
        yield plt


def wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (existing line breaks kept)."""
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())


def texts_outside(fig) -> list[str]:
    """The visible texts of ``fig`` whose extent leaves the figure (empty when everything fits);
    tick labels are checked through their axes' drawn extent ("tick labels of axes i")."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height

    def leaves(box) -> bool:
        return box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5

    ticks = {id(t) for ax in fig.axes for t in ax.get_xticklabels(which="both") + ax.get_yticklabels(which="both")}
    outside = []
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        if id(text) in ticks or not text.get_visible() or not str(text.get_text()).strip():
            continue
        if leaves(text.get_window_extent(renderer)):
            outside.append(text.get_text())
    for i, ax in enumerate(fig.axes):  # only the ticks drawn count here
        if leaves(ax.get_tightbbox(renderer)):
            outside.append(f"tick labels of axes {i}")
    return outside


def save_figure(fig, path: str | Path, dpi: int) -> None:
    """Lay ``fig`` out, write it atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_with(Path(path), lambda p: fig.savefig(p, dpi=dpi, format="png"))
    plt.close(fig)
