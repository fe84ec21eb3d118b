"""The report's figures, saved as PNG blocks: per-class bars, learning curves, confusion
matrices, CAM grids, the sweep's Gantt chart. Each is drawn on its own Agg canvas
(:func:`raybench.plots.new_figure`), never through pyplot, so the user's backend is left alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from raybench import schema as S
from raybench.camset import CamSet
from raybench.plots import MAX_CAM_ROWS, cam_grid_plot, confusion_plot, new_figure, save_png
from raybench.report.blocks import Figure
from raybench.results.tables import HIGH, LOW, SENS, SPEC
from raybench.results.timeline import utilisation


def save_figure(fig: MplFigure, path: Path, caption: str) -> Figure:
    """Saves ``fig`` as a PNG (tight layout, 100 dpi) and returns its report block."""
    return Figure(save_png(fig, path), caption)


def sens_spec_figure(table: pd.DataFrame, model: str, path: Path) -> Figure:
    """Bars of per-class sensitivity and specificity (95% interval whiskers) of one model."""
    rows = table.xs(model, level=S.MODEL) if isinstance(table.index, pd.MultiIndex) \
        else table.loc[[model]]
    x = np.arange(len(rows))
    fig = new_figure((1.6 + 1.1 * len(rows), 3.2))
    ax = fig.subplots()
    for offset, metric, color in ((-0.2, SENS, "#1f77b4"), (0.2, SPEC, "#ff7f0e")):
        mean = rows[metric].to_numpy(float)
        err = np.abs(np.vstack([mean - rows[metric + LOW].to_numpy(float),
                                rows[metric + HIGH].to_numpy(float) - mean]))
        ax.bar(x + offset, mean, 0.4, yerr=np.nan_to_num(err), capsize=3, label=metric,
               color=color)
    ax.set_xticks(x, [str(i) for i in rows.index])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{model}: per-class sensitivity / specificity")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path, f"{model}: per-class sensitivity and specificity (95% interval)")


def learning_curves_plot(epochs: pd.DataFrame, title: str) -> MplFigure:
    """Train / validation loss and validation balanced accuracy per epoch, one line a trial.

    Epochs are whole numbers, so both x axes get integer ticks only.
    """
    fig = new_figure((9, 3.4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = {m: f"C{i}" for i, m in enumerate(sorted(epochs[S.MODEL].dropna().unique()))}
    for (model, _trial), part in epochs.sort_values(S.EPOCH).groupby([S.MODEL, S.TRIAL_ID]):
        c = colors[model]
        ax_loss.plot(part[S.EPOCH], part[S.TRAIN_LOSS], color=c, label=f"{model} train")
        ax_loss.plot(part[S.EPOCH], part[S.VAL_LOSS], color=c, linestyle="--", label=f"{model} val")
        ax_acc.plot(part[S.EPOCH], part[S.VAL_BALANCED_ACCURACY], color=c, marker="o",
                    label=model)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (solid train, dashed val)")
    ax_acc.set(xlabel="epoch", ylabel="balanced accuracy", title="validation", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax_acc.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax_acc.legend(unique.values(), unique.keys(), fontsize=8)
    fig.suptitle(title)
    return fig


def learning_curves_figure(epochs: pd.DataFrame, path: Path, title: str) -> Figure:
    """:func:`learning_curves_plot`, saved as a PNG."""
    return save_figure(learning_curves_plot(epochs, title), path, f"learning curves: {title}")


def confusion_figure(counts: pd.DataFrame, model: str, path: Path) -> Figure:
    """A confusion-matrix heat map with counts (rows true, columns predicted)."""
    return save_figure(confusion_plot(counts, model), path,
                       f"{model}: test confusion matrix, summed over seeds")


def cam_grid_figure(cams: dict[str, CamSet], path: Path, max_rows: int = MAX_CAM_ROWS) -> Figure:
    """:func:`cam_grid_plot`, saved as a PNG with a caption naming the CAM methods."""
    methods = sorted({f"{c.method} @ {c.target_layer}" for c in cams.values()})
    return save_figure(cam_grid_plot(cams, max_rows), path,
                 f"CAMs ({', '.join(methods)}); rows are test images, columns the original "
                 "and each model")


def gantt_figure(timeline: pd.DataFrame, path: Path, slots: Optional[int] = None) -> Figure:
    """The sweep as a Gantt chart: one row per node and slot, one bar per trial (by model)."""
    t0 = timeline[S.STARTED_AT].min()
    lanes = sorted({(str(n), int(s)) for n, s in zip(timeline[S.NODE].fillna("?"),
                                                      timeline["slot"], strict=True)})
    row = {lane: i for i, lane in enumerate(lanes)}
    models = sorted(timeline[S.MODEL].dropna().unique())
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    fig = new_figure((9, 0.45 * len(lanes) + 1.6))
    ax = fig.subplots()
    for r in timeline.itertuples():
        start = (r.started_at - t0).total_seconds()
        y = row[(str(r.node) if isinstance(r.node, str) else "?", int(str(r.slot)))]
        ax.barh(y, float(str(r.duration_s)), left=start, color=colors.get(r.model, "grey"),
                edgecolor="white", hatch="" if r.status == S.STATUS_COMPLETED else "//")
    ax.set_yticks(range(len(lanes)), [f"{n[:8]} / {s}" for n, s in lanes], fontsize=8)
    ax.set(xlabel="seconds since the first trial started", ylabel="node / slot")
    for m, c in colors.items():
        ax.barh([], [], color=c, label=m)
    ax.legend(fontsize=8, loc="upper right")
    util = utilisation(timeline, slots)
    return save_figure(fig, path, f"Sweep timeline: {len(timeline)} trial(s) on {len(lanes)} slot(s); "
                            f"utilisation {util:.2f} (trial time / slots x span; hatched: not "
                            "completed)")


