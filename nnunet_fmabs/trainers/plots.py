"""A picture of the loss terms of eq. 1 and eq. 3 and their weights, per epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nnunet_fmabs.figures import figure_style, save_figure


def loss_terms_figure(logging: dict, keys: Sequence[str]):
    """The figure (call inside :func:`~nnunet_fmabs.figures.figure_style`)."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_w) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for key in keys:
        values = logging.get(key, [])
        ax = ax_w if key.startswith("lambda") else ax_loss
        ax.plot(range(len(values)), values, label=key)
    for key, style in (("train_losses", "k--"), ("val_losses", "r--")):
        ax_loss.plot(range(len(logging.get(key, []))), logging.get(key, []), style, label=key)
    ax_loss.set_ylabel("loss")
    ax_w.set_ylabel("weight")
    ax_w.set_xlabel("epoch")
    for ax in (ax_loss, ax_w):
        ax.legend()
        ax.grid(alpha=0.3)
    ax_loss.set_title("L = L_sup^cross + lambda_sam L_sup^SAM + lambda_c L_c")
    return fig


def plot_loss_terms(logging: dict, keys: Sequence[str], path: Path, log=print) -> None:
    """Draw ``loss_terms.png``; a failure is logged, never raised (a picture must never stop training)."""
    try:
        with figure_style():
            save_figure(loss_terms_figure(logging, keys), path, dpi=80)
    except Exception as e:  # noqa: BLE001
        log(f"could not draw {Path(path).name}: {e}")
