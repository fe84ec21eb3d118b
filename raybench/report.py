"""A sweep's report: ``report.md`` plus a self-contained ``report.html`` (PNG figures inlined).

Contents: the paper-style tables per scenario, a per-trial summary, per-class sensitivity /
specificity plots per model, learning curves, confusion matrices (from the predictions) and,
when ``cams/<trial_id>.npz`` files exist, a CAM grid (rows = images, columns = the original
and each model, like the paper's Figures 3 and 4).

Layout: a table of contents (every level-2 and level-3 heading block, so sections added as
blocks appear in it), small multiples (:class:`Grid`) side by side in HTML and in order in
Markdown. Figures are drawn on their own Agg canvas (:func:`new_figure`), never through
pyplot, so importing or running this module leaves the user's matplotlib backend alone.
"""
from __future__ import annotations

import base64
import html
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from raybench import schema as S
from raybench.camset import CamSet
from raybench.results import (
    HIGH, LOW, OVERALL, SENS, SPEC, Results, format_paper_table, load,
    to_markdown,
)
from raybench.errors import RaybenchError
from raybench.storage import current_umask, redact

log = logging.getLogger(__name__)
FIGURES = "figures"
MAX_CAM_ROWS = 6
ROW_LABEL_CHARS = 24  # one line of a CAM-grid row label (vertical, 7 pt) fits its 1.9 in row


@dataclass(frozen=True)
class Figure:
    path: Path  # absolute PNG path
    caption: str


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame


@dataclass(frozen=True)
class Grid:
    """Small multiples (one per model, say): side by side in HTML, in order in Markdown."""

    figures: tuple[Figure, ...]


# A str starting with "#" is a heading (levels 2 and 3 go into the table of contents),
# any other str a paragraph.
Block = Union[str, Figure, Table, Grid]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:60] or "x"


def new_figure(figsize: tuple[float, float]) -> MplFigure:
    """A matplotlib figure on its own Agg canvas: no pyplot, no global backend switch."""
    fig = MplFigure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: MplFigure, path: Path, caption: str) -> Figure:
    """Saves ``fig`` as a PNG (tight layout, 100 dpi) and returns its report block."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Figure(path, caption)


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
    fig = new_figure((1.5 + 0.8 * len(counts), 1.2 + 0.8 * len(counts)))
    ax = fig.subplots()
    ax.imshow(counts.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(counts.columns)), counts.columns, rotation=30)
    ax.set_yticks(range(len(counts.index)), counts.index)
    ax.set(xlabel="predicted", ylabel="true", title=model)
    top = counts.to_numpy().max() or 1
    for (i, j), v in np.ndenumerate(counts.to_numpy()):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > top / 2 else "black")
    return save_figure(fig, path, f"{model}: test confusion matrix, summed over seeds")


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


def cam_grid_figure(cams: dict[str, CamSet], path: Path, max_rows: int = MAX_CAM_ROWS) -> Figure:
    """:func:`cam_grid_plot`, saved as a PNG with a caption naming the CAM methods."""
    methods = sorted({f"{c.method} @ {c.target_layer}" for c in cams.values()})
    return save_figure(cam_grid_plot(cams, max_rows), path,
                 f"CAMs ({', '.join(methods)}); rows are test images, columns the original "
                 "and each model")


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


def gantt_figure(timeline: pd.DataFrame, path: Path, slots: Optional[int] = None) -> Figure:
    """The sweep as a Gantt chart: one row per node and slot, one bar per trial (by model)."""
    from raybench.results import utilisation

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
                edgecolor="white", hatch="" if r.status == "completed" else "//")
    ax.set_yticks(range(len(lanes)), [f"{n[:8]} / {s}" for n, s in lanes], fontsize=8)
    ax.set(xlabel="seconds since the first trial started", ylabel="node / slot")
    for m, c in colors.items():
        ax.barh([], [], color=c, label=m)
    ax.legend(fontsize=8, loc="upper right")
    util = utilisation(timeline, slots)
    return save_figure(fig, path, f"Sweep timeline: {len(timeline)} trial(s) on {len(lanes)} slot(s); "
                            f"utilisation {util:.2f} (trial time / slots x span; hatched: not "
                            "completed)")


def _timeline_blocks(res: Results, figs: Path) -> list[Block]:
    timeline = res.timeline()
    if timeline.empty:
        return []
    return ["## Sweep timeline",
            f"Utilisation = sum of trial durations / (slots x span) = "
            f"{res.utilisation():.3f}, with {len(timeline)} trial(s) from "
            f"{timeline[S.STARTED_AT].min():%Y-%m-%d %H:%M:%S} to "
            f"{timeline[S.FINISHED_AT].max():%H:%M:%S} UTC.",
            gantt_figure(timeline, figs / "timeline.png")]


def _cam_sets(res: Results, sweep: str) -> dict[str, CamSet]:
    """The CAMs of the first trial (by id) of each model that has CAMs."""
    trials = set(res.cam_trials(sweep))
    runs = res.runs[res.runs[S.TRIAL_ID].isin(trials)].sort_values([S.MODEL, S.TRIAL_ID])
    firsts = runs.drop_duplicates(S.MODEL)
    sets = {row[S.MODEL]: res.store.read_cams_or_none(sweep, row[S.TRIAL_ID])
            for _, row in firsts.iterrows()}
    return {model: cams for model, cams in sets.items() if cams is not None}


def _roi_table(res: Results) -> Optional[pd.DataFrame]:
    """ROI focus and pointing game per trial and class (None when no trial has them)."""
    m = res.metrics
    rows = m[(m[S.SPLIT] == "test") & m[S.METRIC].str.match(r"(roi_focus|pointing_game)")]
    if rows.empty:
        return None
    wide = rows.pivot_table(index=[S.TRIAL_ID, S.CLASS], columns=S.METRIC, values=S.VALUE)
    return wide.round(3).reset_index().set_index(S.TRIAL_ID)


def _summary(res: Results) -> pd.DataFrame:
    from raybench.results import whole_split

    m = whole_split(res.metrics)
    overall = m[(m[S.SPLIT] == "test") & (m[S.CLASS] == "all") & m[S.METRIC].isin(OVERALL)]
    wide = overall.pivot_table(index=[S.SWEEP, S.TRIAL_ID], columns=S.METRIC, values=S.VALUE)
    varied = [h for h in S.HYPERPARAMETERS  # what the sweep searched over
              if h in res.runs and res.runs[h].nunique(dropna=True) > 1]
    cols = [S.TRIAL_ID, S.MODEL, S.SCENARIO, S.SEED, *varied, S.EPOCHS_RUN,
            S.TRAIN_IMAGES_PER_S, S.WALL_S, S.STATUS]
    table = res.runs[[S.SWEEP] + cols].merge(wide.reset_index(), on=[S.SWEEP, S.TRIAL_ID],
                                              how="left")
    return table.drop(columns=[S.SWEEP]).sort_values([S.MODEL, S.SEED]).set_index(S.TRIAL_ID)


def _scenario_blocks(res: Results, scenario: str, figs: Path, tag: str) -> list[Block]:
    blocks: list[Block] = [f"## Scenario: {scenario}"]
    table = res.paper_table(scenario)  # full images (roi variants: the shortcut section)
    layout = "Table 1 layout (positive class one-vs-rest)" if not isinstance(
        table.index, pd.MultiIndex) else "Table 2 layout (per model and class)"
    blocks += [f"Test sensitivity and specificity, mean [95% interval] over seeds; {layout}.",
               Table(format_paper_table(table))]
    runs = res.completed_runs(scenario)
    models = sorted(runs[S.MODEL].unique())
    if isinstance(table.index, pd.MultiIndex):
        blocks += ["### Per-class sensitivity / specificity", Grid(tuple(
            sens_spec_figure(table, m, figs / f"sensspec-{tag}-{_slug(m)}.png")
            for m in models if m in table.index.get_level_values(0)))]
    epochs = res.with_runs(res.epochs, [S.MODEL]).merge(runs[[S.SWEEP, S.TRIAL_ID]])
    if not epochs.empty:
        blocks += ["### Learning curves",
                   learning_curves_figure(epochs, figs / f"curves-{tag}.png", scenario)]
    matrices = []
    for m in models:
        try:
            counts = res.confusion(m, scenario)
        except Exception as exc:  # a trial without predictions still gets the rest
            log.warning("no confusion matrix for %s: %s", m, exc)
            continue
        matrices.append(confusion_figure(counts, m, figs / f"confusion-{tag}-{_slug(m)}.png"))
    blocks += ["### Confusion matrices", Grid(tuple(matrices))]
    return blocks


def build_blocks(res: Results, sweep: str, out: Path) -> list[Block]:
    """The report's content, in order; figures are written under ``out/figures``."""
    figs = out / FIGURES
    figs.mkdir(parents=True, exist_ok=True)
    runs = res.runs
    first: Any = runs.iloc[0] if len(runs) else {}
    blocks: list[Block] = [
        f"# raybench report: {sweep}",
        f"Results root `{redact(res.store.root.uri)}`; {len(runs)} trial(s), "
        f"{int((runs[S.STATUS] == 'completed').sum())} completed; models: "
        f"{', '.join(sorted(runs[S.MODEL].dropna().unique()))}. "
        f"raybench {first.get(S.RAYBENCH_VERSION)}, torch {first.get(S.TORCH_VERSION)}, "
        f"ray {first.get(S.RAY_VERSION)}, timm {first.get(S.TIMM_VERSION)}; "
        f"device {first.get(S.DEVICE)}, precision {first.get(S.PRECISION)}.",
    ]
    from raybench import report_stats as rs

    blocks += rs.origin_blocks(res)
    for i, scenario in enumerate(res.scenarios()):
        blocks += _scenario_blocks(res, scenario, figs, f"s{i}")
        blocks += rs.ranking_blocks(res, scenario, figs, f"s{i}")
        blocks += rs.source_blocks(res, scenario)
    blocks += rs.shortcut_blocks(res) + rs.calibration_blocks(res, figs)
    blocks += ["## Trials", Table(_summary(res))]
    blocks += _timeline_blocks(res, figs)
    cams = _cam_sets(res, sweep)
    if cams:
        blocks += ["## Class activation maps", cam_grid_figure(cams, figs / "cams.png")]
    roi = _roi_table(res)
    if roi is not None:
        blocks += ["### ROI focus",
                   "ROI focus: share of positive CAM energy inside the lung mask; pointing game: "
                   "share of images whose CAM maximum lies inside it (test images with CAMs; "
                   "`_approx`: lung-field template, no masks). See `raybench.cam.roi`.",
                   Table(roi)]
        note = rs.roi_chance_note(res)
        if note:
            blocks.append(note)
    return blocks


def _inline(text: str) -> str:
    """A paragraph's Markdown ``**bold**`` and ``code`` spans as HTML (the rest escaped)."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def headings(blocks: list[Block]) -> list[tuple[int, str, str]]:
    """(level, text, anchor) of every heading block, anchors as GitHub makes them.

    GitHub lower-cases, drops punctuation, turns spaces into ``-`` and numbers repeats
    (``-1``, ``-2``), so the Markdown TOC's links work there and in the HTML alike.
    """
    out: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    for b in blocks:
        if isinstance(b, str) and b.startswith("#"):
            level, text = len(b) - len(b.lstrip("#")), b.lstrip("#").strip()
            base = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.append((level, text, base if n == 0 else f"{base}-{n}"))
    return out


@dataclass(frozen=True)
class _Toc:
    """The table of contents: (level, text, anchor) of the level-2 and level-3 headings."""

    entries: tuple[tuple[int, str, str], ...]


def _with_toc(blocks: list[Block]) -> list[Block | _Toc]:
    """``blocks`` with the table of contents before the first section (level-2 heading)."""
    entries = [h for h in headings(blocks) if h[0] in (2, 3)]
    first = next((i for i, b in enumerate(blocks) if isinstance(b, str) and b.startswith("## ")),
                 None)
    if first is None or not entries:
        return list(blocks)
    return [*blocks[:first], _Toc(tuple(entries)), *blocks[first:]]


def _md_figure(b: Figure, out: Path) -> str:
    return f"![{b.caption}]({b.path.relative_to(out).as_posix()})\n\n*{b.caption}*"


def _md(blocks: list[Block], out: Path) -> str:
    parts = []
    for b in _with_toc(blocks):
        if isinstance(b, _Toc):
            parts.append("**Contents**\n\n" + "\n".join(
                f"{'  ' * (level - 2)}- [{text}](#{anchor})" for level, text, anchor in b.entries))
        elif isinstance(b, Figure):
            parts.append(_md_figure(b, out))
        elif isinstance(b, Grid):  # Markdown has no columns: the small multiples in order
            parts += [_md_figure(f, out) for f in b.figures]
        elif isinstance(b, Table):
            parts.append(to_markdown(b.frame))
        else:
            parts.append(b)
    return "\n\n".join(parts) + "\n"


def _html_figure(b: Figure) -> str:
    data = base64.b64encode(b.path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
            f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")


def _html_toc(toc: _Toc) -> str:
    items = [f'<li class="toc{level}"><a href="#{anchor}">{html.escape(text)}</a></li>'
             for level, text, anchor in toc.entries]
    return f'<nav class="toc"><strong>Contents</strong><ul>{"".join(items)}</ul></nav>'


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;"
         "border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}"
         "figure{margin:0.5em 0}figcaption{font-size:12px;color:#555}"
         # Small multiples: as many columns as fit, each at least 340 px wide.
         ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));"
         "gap:12px;align-items:start}"
         ".toc{background:#f6f8fa;border:1px solid #ddd;padding:0.5em 1em;}"
         ".toc ul{margin:0.3em 0;padding-left:1em;list-style:none}.toc li{break-inside:avoid}"
         ".toc3{padding-left:1.2em;font-size:13px}")


def _html(blocks: list[Block], title: str) -> str:
    anchors = iter(h[2] for h in headings(blocks))
    parts = []
    for b in _with_toc(blocks):
        if isinstance(b, _Toc):
            parts.append(_html_toc(b))
        elif isinstance(b, Figure):
            parts.append(_html_figure(b))
        elif isinstance(b, Grid):
            parts.append('<div class="grid">' + "".join(map(_html_figure, b.figures)) + "</div>")
        elif isinstance(b, Table):
            parts.append(b.frame.to_html(float_format=lambda v: f"{v:.4g}", na_rep="",
                                         border=0, classes="table"))
        elif b.startswith("#"):
            level = len(b) - len(b.lstrip("#"))
            parts.append(f'<h{level} id="{next(anchors)}">{html.escape(b.lstrip("#").strip())}'
                         f"</h{level}>")
        else:
            parts.append(f"<p>{_inline(b)}</p>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")


def write_report(uri: str, sweep: str, out: Union[str, Path],
                 results: Optional[Results] = None, *, skip_corrupt: bool = False) -> Path:
    """Writes ``out/report.md``, ``out/report.html`` and ``out/figures/*.png``.

    Everything is written into a hidden sibling folder first and moved into place at the end,
    so a failure leaves ``out`` as it was (no half report). Other files in ``out`` stay.

    Args:
        uri: The results root.
        sweep: The sweep to report on.
        out: Output folder (created when missing).
        results: Already loaded results (default: ``load(uri, sweep)``).
        skip_corrupt: Leave out unreadable result files with a warning instead of failing.

    Returns:
        The path of ``report.html`` (self-contained: its figures are inlined).

    Raises:
        RaybenchError: The sweep is missing or has no completed trial, a result file is
            corrupt, or ``out`` is a file.
    """
    res = results or load(uri, sweep, skip_corrupt=skip_corrupt)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RaybenchError(f"--out {out} is a file; pass a folder for the report")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        blocks = build_blocks(res, sweep, tmp)
        (tmp / "report.md").write_text(_md(blocks, tmp), encoding="utf-8")
        (tmp / "report.html").write_text(_html(blocks, f"raybench report: {sweep}"),
                                         encoding="utf-8")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "report.html"


def _move_into_place(tmp: Path, out: Path) -> None:
    """Renames the finished report from ``tmp`` to ``out`` (same filesystem: renames only)."""
    if not out.exists():
        tmp.rename(out)
        return
    old = tmp / ".old-figures"
    if (out / FIGURES).exists():
        (out / FIGURES).rename(old)
    (tmp / FIGURES).rename(out / FIGURES)
    for name in ("report.md", "report.html"):
        os.replace(tmp / name, out / name)


__all__ = ["Block", "Figure", "Grid", "Table", "build_blocks", "cam_grid_figure", "cam_grid_plot",
           "headings", "learning_curves_plot", "new_figure", "save_figure", "write_report"]
