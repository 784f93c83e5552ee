"""The training-curve PNG: train loss and validation metrics per epoch.

Drawn with matplotlib's object API on an Agg canvas, so no global backend is switched (pyplot is never
imported) and it works on machines without a display.
"""

from __future__ import annotations

import math
from pathlib import Path

from imf_kg.io import atomic_write_figure

VALID_PREFIX = "valid/"


def plot_training_curve(history: list[dict], path: str | Path, metric: str, max_other_metrics: int = 4) -> Path:
    """Write a two-panel PNG atomically: train loss (left) and validation metrics (right) against epoch.

    Args:
        history: one record per epoch with ``"epoch"``, ``"train_loss"`` and ``"valid/<name>"`` keys.
        path: where the PNG goes.
        metric: the selection metric, drawn first and thick; a few other validation metrics are drawn thin.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=80)
    FigureCanvasAgg(figure)
    loss_axis, metric_axis = figure.subplots(1, 2)
    # fixed margins: tight_layout costs more than drawing the plot
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.25)

    epochs = [r["epoch"] for r in history if _finite(r.get("train_loss"))]
    losses = [r["train_loss"] for r in history if _finite(r.get("train_loss"))]
    loss_axis.plot(epochs, losses, marker=".", color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss")
    loss_axis.set_title("training loss")
    loss_axis.grid(alpha=0.3)

    names = sorted({k[len(VALID_PREFIX):] for r in history for k in r if k.startswith(VALID_PREFIX)})
    others = [n for n in names if n != metric and "/" not in n][:max_other_metrics]
    for name in ([metric] if metric in names else []) + others:
        points = [(r["epoch"], r[VALID_PREFIX + name]) for r in history if _finite(r.get(VALID_PREFIX + name))]
        if points:
            xs, ys = zip(*points)
            metric_axis.plot(xs, ys, marker="o", linewidth=2.5 if name == metric else 1.0, label=name)
    best = [r["epoch"] for r in history if r.get("is_best")]
    if best:
        metric_axis.axvline(best[-1], color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best[-1]})")
    metric_axis.set_xlabel("epoch")
    metric_axis.set_title("validation")
    metric_axis.grid(alpha=0.3)
    if metric_axis.get_legend_handles_labels()[0]:
        metric_axis.legend(fontsize="small")

    return atomic_write_figure(path, figure)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
