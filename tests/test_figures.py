"""Our PNGs stay readable under nnU-Net's global seaborn style (font scale 2.5): every text inside."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from nnunet_fmabs.annotation.curve import curve_figure, plot_curve
from nnunet_fmabs.figures import figure_style, texts_outside
from nnunet_fmabs.pseudolabels.figure import round_figure, save_round_figure
from nnunet_fmabs.trainers.plots import loss_terms_figure, plot_loss_terms

matplotlib.use("Agg")


@pytest.fixture
def nnunet_style():
    """What nnU-Net's logger does before drawing its progress plot."""
    import seaborn as sns

    saved = dict(matplotlib.rcParams)
    sns.set(font_scale=2.5)
    yield
    matplotlib.rcParams.update(saved)


ROWS = [{"round": r, "iteration": 100 * r, "labeled_scans": r + 1, "labeled_slices": 3 * (r + 1),
         "val_dice": v} for r, v in enumerate((0.31, 0.62, 0.97))]
LOGGING = {k: list(np.linspace(1, 0.2, 30)) for k in ("train_losses", "val_losses", "sam_loss", "cons_loss",
                                                        "lambda_sam", "lambda_c")}
TITLE = ("round 2 (t = 300, schedule): 25 scans, 3911 prompted slices; expert planes Dice Y_f 0.833 vs teacher "
         "0.853: accepted (guard: planes, margin 0.05)")


def _round_args():
    rng = np.random.default_rng(0)
    image = rng.random((20, 24, 28))
    teacher = np.zeros(image.shape, bool)
    teacher[5:15, 6:18, 7:21] = True
    return image, teacher, [teacher] * 3, teacher, teacher


def test_every_text_lies_inside_our_figures(nnunet_style):
    assert matplotlib.rcParams["font.size"] > 20  # the style that cut our labels off is active
    builders = {
        "curve": lambda: curve_figure(ROWS),
        "loss terms": lambda: loss_terms_figure(LOGGING, ("sam_loss", "cons_loss", "lambda_sam", "lambda_c")),
        "round": lambda: round_figure(*_round_args(), title=TITLE),
    }
    for name, build in builders.items():
        with figure_style():
            fig = build()
            fig.tight_layout()
            assert texts_outside(fig) == [], name
    assert matplotlib.rcParams["font.size"] > 20  # nnU-Net's own style is left as it was


def test_the_check_sees_a_cut_off_label(nnunet_style):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_xlabel("labeled slices (3 per queried scan)")
    assert "labeled slices (3 per queried scan)" in texts_outside(fig)
    plt.close(fig)


def test_pngs_are_written(tmp_path, nnunet_style):
    plot_curve(ROWS, tmp_path / "curve.png")
    plot_loss_terms(LOGGING, ("sam_loss", "lambda_sam"), tmp_path / "loss.png")
    save_round_figure(tmp_path / "round.png", *_round_args(), title=TITLE)
    for name in ("curve.png", "loss.png", "round.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
