"""Figure primitives shared by the report and the MLflow mirror, each drawn on its own Agg
canvas (:func:`new_figure`), never through pyplot, so drawing leaves the user's matplotlib
backend alone: confusion matrices and CAM grids.

They read plain tables and :class:`~raybench.camset.CamSet` only, so training (which mirrors a
trial's figures) and the report both use them without importing each other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from raybench.camset import CamSet

MAX_CAM_ROWS = 6
ROW_LABEL_CHARS = 24  # one line of a CAM-grid row label (vertical, 7 pt) fits its 1.9 in row


def new_figure(figsize: tuple[float, float]) -> MplFigure:
    """A matplotlib figure on its own Agg canvas: no pyplot, no global backend switch."""
    fig = MplFigure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: MplFigure, path: Path) -> Path:
    """Saves ``fig`` as a PNG (tight layout, 100 dpi); returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def confusion_plot(counts: pd.DataFrame, title: str) -> MplFigure:
    """A confusion-matrix heat map with counts (rows true, columns predicted)."""
    fig = new_figure((1.5 + 0.8 * len(counts), 1.2 + 0.8 * len(counts)))
    ax = fig.subplots()
    ax.imshow(counts.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(counts.columns)), counts.columns, rotation=30)
    ax.set_yticks(range(len(counts.index)), counts.index)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = counts.to_numpy().max() or 1
    for (i, j), v in np.ndenumerate(counts.to_numpy()):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > top / 2 else "black")
    return fig


def row_label(text: str, width: int = ROW_LABEL_CHARS, lines: int = 3) -> str:
    """``text`` wrapped into lines of ``width`` characters, at most ``lines`` of them.

    A longer id is cut in the middle (ids of one data set often share a prefix and differ
    near the end), so a CAM-grid row label never grows past its own row.
    """
    limit = width * lines
    if len(text) > limit:
        keep = limit - 1
        text = f"{text[:(keep + 1) // 2]}\u2026{text[len(text) - keep // 2:]}"
    return "\n".join(text[i:i + width] for i in range(0, len(text), width))


def _grid_rows(cams: dict[str, CamSet], max_rows: int) -> list[str]:
    """Image ids shared by every model's CAMs, round-robin over labels, at most ``max_rows``."""
    shared = set.intersection(*(set(c.image_ids.tolist()) for c in cams.values()))
    first = next(iter(cams.values()))
    by_label: dict[str, list[str]] = {}
    for image_id, label in zip(first.image_ids.tolist(), first.labels.tolist(), strict=True):
        if image_id in shared:
            by_label.setdefault(label, []).append(image_id)
    # Round-robin over labels so the grid shows every class before repeating one.
    picked = [ids[k] for k in range(len(shared)) for ids in by_label.values() if k < len(ids)]
    return picked[:max_rows]


def cam_grid_plot(cams: dict[str, CamSet], max_rows: int = MAX_CAM_ROWS) -> MplFigure:
    """Rows = images shared by every model's CAMs; columns = the original, then each model."""
    models = list(cams)
    picked = _grid_rows(cams, max_rows)
    fig = new_figure((1.9 * (len(models) + 1), 1.9 * len(picked)))
    axes = fig.subplots(len(picked), len(models) + 1, squeeze=False)
    for r, image_id in enumerate(picked):
        for c, name in enumerate([None, *models]):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            source = cams[name or models[0]]
            k = int(np.flatnonzero(source.image_ids == image_id)[0])
            _draw_cam_cell(ax, source, k, show_cam=name is not None)
            if c == 0:  # long ids are cut so that labels of neighbouring rows never meet
                ax.set_ylabel(f"{row_label(image_id)}\n({source.labels[k]})", fontsize=7)
                ax.set_title("original" if r == 0 else "", fontsize=8)
            else:
                ax.set_title((f"{name}\n" if r == 0 else "") + f"pred {source.predicted[k]}",
                             fontsize=7)
    return fig


def _draw_cam_cell(ax: Axes, cams: CamSet, k: int, show_cam: bool) -> None:
    h, w = cams.input_size
    if cams.images is not None:
        h, w = cams.images.shape[1:]
        ax.imshow(cams.images[k], cmap="gray", vmin=0, vmax=255, extent=(0, w, h, 0))
    elif not show_cam:
        ax.text(0.5, 0.5, "image not stored", ha="center", va="center", fontsize=7)
    if show_cam:
        ax.imshow(cams.cams[k].astype(np.float32), cmap="jet", extent=(0, w, h, 0),
                  alpha=0.45 if cams.images is not None else 1.0, interpolation="bilinear")
