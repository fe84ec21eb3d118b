"""A sweep's report: ``report.md`` plus a self-contained ``report.html`` (PNG figures inlined).

Contents: the paper-style tables per scenario, a per-trial summary, per-class sensitivity /
specificity plots per model, learning curves, confusion matrices (from the predictions) and,
when ``cams/<trial_id>.npz`` files exist, a CAM grid (rows = images, columns = the original
and each model, like the paper's Figures 3 and 4).
"""
from __future__ import annotations

import base64
import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from raybench import schema as S  # noqa: E402
from raybench.results import (  # noqa: E402
    HIGH, LOW, OVERALL, SENS, SPEC, Results, format_paper_table, load,
    to_markdown,
)
from raybench.storage import redact  # noqa: E402
from raybench.store import CamSet  # noqa: E402

log = logging.getLogger(__name__)
FIGURES = "figures"
MAX_CAM_ROWS = 6


@dataclass(frozen=True)
class Figure:
    path: Path  # absolute PNG path
    caption: str


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame


Block = Union[str, Figure, Table]  # a str starting with "#" is a heading, else a paragraph


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:60] or "x"


def _save(fig: plt.Figure, path: Path, caption: str) -> Figure:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Figure(path, caption)


def sens_spec_figure(table: pd.DataFrame, model: str, path: Path) -> Figure:
    """Bars of per-class sensitivity and specificity (95% interval whiskers) of one model."""
    rows = table.xs(model, level=S.MODEL) if isinstance(table.index, pd.MultiIndex) \
        else table.loc[[model]]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(rows), 3.2))
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
    return _save(fig, path, f"{model}: per-class sensitivity and specificity (95% interval)")


def learning_curves_figure(epochs: pd.DataFrame, path: Path, title: str) -> Figure:
    """Train / validation loss and validation balanced accuracy per epoch, one line a trial."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    colors = {m: f"C{i}" for i, m in enumerate(sorted(epochs[S.MODEL].dropna().unique()))}
    for (model, trial), part in epochs.sort_values(S.EPOCH).groupby([S.MODEL, S.TRIAL_ID]):
        c = colors[model]
        ax_loss.plot(part[S.EPOCH], part["train_loss"], color=c, label=f"{model} train")
        ax_loss.plot(part[S.EPOCH], part["val_loss"], color=c, linestyle="--", label=f"{model} val")
        ax_acc.plot(part[S.EPOCH], part["val_balanced_accuracy"], color=c, marker="o",
                    label=model)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (solid train, dashed val)")
    ax_acc.set(xlabel="epoch", ylabel="balanced accuracy", title="validation", ylim=(0, 1.02))
    handles, labels = ax_acc.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax_acc.legend(unique.values(), unique.keys(), fontsize=8)
    fig.suptitle(title)
    return _save(fig, path, f"learning curves: {title}")


def confusion_figure(counts: pd.DataFrame, model: str, path: Path) -> Figure:
    """A confusion-matrix heat map with counts (rows true, columns predicted)."""
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(counts), 1.2 + 0.8 * len(counts)))
    ax.imshow(counts.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(counts.columns)), counts.columns, rotation=30)
    ax.set_yticks(range(len(counts.index)), counts.index)
    ax.set(xlabel="predicted", ylabel="true", title=model)
    top = counts.to_numpy().max() or 1
    for (i, j), v in np.ndenumerate(counts.to_numpy()):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > top / 2 else "black")
    return _save(fig, path, f"{model}: test confusion matrix, summed over seeds")


def cam_grid_figure(cams: dict[str, CamSet], path: Path, max_rows: int = MAX_CAM_ROWS) -> Figure:
    """Rows = images shared by every model's CAMs; columns = the original, then each model."""
    models = list(cams)
    shared = set.intersection(*(set(c.image_ids.tolist()) for c in cams.values()))
    first = cams[models[0]]
    order = [i for i in first.image_ids.tolist() if i in shared]
    by_label: dict[str, list[str]] = {}
    for image_id, label in zip(first.image_ids.tolist(), first.labels.tolist()):
        if image_id in shared:
            by_label.setdefault(label, []).append(image_id)
    # Round-robin over labels so the grid shows every class before repeating one.
    picked = [ids[k] for k in range(len(order)) for ids in by_label.values() if k < len(ids)]
    picked = picked[:max_rows]
    fig, axes = plt.subplots(len(picked), len(models) + 1, squeeze=False,
                             figsize=(1.9 * (len(models) + 1), 1.9 * len(picked)))
    for r, image_id in enumerate(picked):
        for c, name in enumerate([None, *models]):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            source = cams[name or models[0]]
            k = int(np.flatnonzero(source.image_ids == image_id)[0])
            _draw_cam_cell(ax, source, k, show_cam=name is not None)
            if c == 0:
                ax.set_ylabel(f"{image_id}\n({source.labels[k]})", fontsize=7)
                ax.set_title("original" if r == 0 else "", fontsize=8)
            else:
                ax.set_title((f"{name}\n" if r == 0 else "") + f"pred {source.predicted[k]}",
                             fontsize=7)
    methods = sorted({f"{c.method} @ {c.target_layer}" for c in cams.values()})
    return _save(fig, path, f"CAMs ({', '.join(methods)}); rows are test images, "
                            "columns the original and each model")


def _draw_cam_cell(ax: plt.Axes, cams: CamSet, k: int, show_cam: bool) -> None:
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

    t0 = timeline["started_at"].min()
    lanes = sorted({(str(n), int(s)) for n, s in zip(timeline["node"].fillna("?"),
                                                      timeline["slot"], strict=True)})
    row = {lane: i for i, lane in enumerate(lanes)}
    models = sorted(timeline[S.MODEL].dropna().unique())
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(lanes) + 1.6))
    for r in timeline.itertuples():
        start = (r.started_at - t0).total_seconds()
        y = row[(str(r.node) if isinstance(r.node, str) else "?", int(r.slot))]
        ax.barh(y, r.duration_s, left=start, color=colors.get(r.model, "grey"),
                edgecolor="white", hatch="" if r.status == "completed" else "//")
    ax.set_yticks(range(len(lanes)), [f"{n[:8]} / {s}" for n, s in lanes], fontsize=8)
    ax.set(xlabel="seconds since the first trial started", ylabel="node / slot")
    for m, c in colors.items():
        ax.barh([], [], color=c, label=m)
    ax.legend(fontsize=8, loc="upper right")
    util = utilisation(timeline, slots)
    return _save(fig, path, f"Sweep timeline: {len(timeline)} trial(s) on {len(lanes)} slot(s); "
                            f"utilisation {util:.2f} (trial time / slots x span; hatched: not "
                            "completed)")


def _timeline_blocks(res: Results, figs: Path) -> list[Block]:
    timeline = res.timeline()
    if timeline.empty:
        return []
    return ["## Sweep timeline",
            f"Utilisation = sum of trial durations / (slots x span) = "
            f"{res.utilisation():.3f}, with {len(timeline)} trial(s) from "
            f"{timeline['started_at'].min():%Y-%m-%d %H:%M:%S} to "
            f"{timeline['finished_at'].max():%H:%M:%S} UTC.",
            gantt_figure(timeline, figs / "timeline.png")]


def _cam_sets(res: Results, sweep: str) -> dict[str, CamSet]:
    """The CAMs of the first trial (by id) of each model that has CAMs."""
    trials = set(res.store.cam_trials(sweep))
    runs = res.runs[res.runs[S.TRIAL_ID].isin(trials)].sort_values([S.MODEL, S.TRIAL_ID])
    firsts = runs.drop_duplicates(S.MODEL)
    return {row[S.MODEL]: res.store.read_cams(sweep, row[S.TRIAL_ID])
            for _, row in firsts.iterrows()}


def _roi_table(res: Results) -> Optional[pd.DataFrame]:
    """ROI focus and pointing game per trial and class (None when no trial has them)."""
    m = res.metrics
    rows = m[(m[S.SPLIT] == "test") & m[S.METRIC].str.match(r"(roi_focus|pointing_game)")]
    if rows.empty:
        return None
    wide = rows.pivot_table(index=[S.TRIAL_ID, S.CLASS], columns=S.METRIC, values=S.VALUE)
    return wide.round(3).reset_index().set_index(S.TRIAL_ID)


def _summary(res: Results) -> pd.DataFrame:
    m = res.metrics
    overall = m[(m[S.SPLIT] == "test") & (m[S.CLASS] == "all") & m[S.METRIC].isin(OVERALL)]
    wide = overall.pivot_table(index=[S.SWEEP, S.TRIAL_ID], columns=S.METRIC, values=S.VALUE)
    varied = [h for h in S.HYPERPARAMETERS  # what the sweep searched over
              if h in res.runs and res.runs[h].nunique(dropna=True) > 1]
    cols = [S.TRIAL_ID, S.MODEL, S.SCENARIO, S.SEED, *varied, "epochs_run",
            "train_images_per_s", "wall_s", S.STATUS]
    table = res.runs[[S.SWEEP] + cols].merge(wide.reset_index(), on=[S.SWEEP, S.TRIAL_ID],
                                              how="left")
    return table.drop(columns=[S.SWEEP]).sort_values([S.MODEL, S.SEED]).set_index(S.TRIAL_ID)


def _scenario_blocks(res: Results, scenario: str, figs: Path, tag: str) -> list[Block]:
    blocks: list[Block] = [f"## Scenario: {scenario}"]
    table = res.paper_table(scenario)
    layout = "Table 1 layout (positive class one-vs-rest)" if not isinstance(
        table.index, pd.MultiIndex) else "Table 2 layout (per model and class)"
    blocks += [f"Test sensitivity and specificity, mean [95% interval] over seeds; {layout}.",
               Table(format_paper_table(table))]
    runs = res._completed(scenario)
    models = sorted(runs[S.MODEL].unique())
    if isinstance(table.index, pd.MultiIndex):
        blocks.append("### Per-class sensitivity / specificity")
        blocks += [sens_spec_figure(table, m, figs / f"sensspec-{tag}-{_slug(m)}.png")
                   for m in models if m in table.index.get_level_values(0)]
    epochs = res.with_runs(res.epochs, [S.MODEL]).merge(runs[[S.SWEEP, S.TRIAL_ID]])
    if not epochs.empty:
        blocks += ["### Learning curves",
                   learning_curves_figure(epochs, figs / f"curves-{tag}.png", scenario)]
    blocks.append("### Confusion matrices")
    for m in models:
        try:
            counts = res.confusion(m, scenario)
        except Exception as exc:  # a trial without predictions still gets the rest
            log.warning("no confusion matrix for %s: %s", m, exc)
            continue
        blocks.append(confusion_figure(counts, m, figs / f"confusion-{tag}-{_slug(m)}.png"))
    return blocks


def build_blocks(res: Results, sweep: str, out: Path) -> list[Block]:
    """The report's content, in order; figures are written under ``out/figures``."""
    figs = out / FIGURES
    figs.mkdir(parents=True, exist_ok=True)
    runs = res.runs
    first = runs.iloc[0] if len(runs) else {}
    blocks: list[Block] = [
        f"# raybench report: {sweep}",
        f"Results root `{redact(res.store.root.uri)}`; {len(runs)} trial(s), "
        f"{int((runs[S.STATUS] == 'completed').sum())} completed; models: "
        f"{', '.join(sorted(runs[S.MODEL].dropna().unique()))}. "
        f"raybench {first.get('raybench_version')}, torch {first.get('torch_version')}, "
        f"ray {first.get('ray_version')}, timm {first.get('timm_version')}; "
        f"device {first.get('device')}, precision {first.get('precision')}.",
    ]
    for i, scenario in enumerate(res.scenarios()):
        blocks += _scenario_blocks(res, scenario, figs, f"s{i}")
    blocks += ["## Trials", Table(_summary(res))]
    blocks += _timeline_blocks(res, figs)
    cams = _cam_sets(res, sweep)
    if cams:
        blocks += ["## Class activation maps", cam_grid_figure(cams, figs / "cams.png")]
    roi = _roi_table(res)
    if roi is not None:
        blocks += ["ROI focus: share of positive CAM energy inside the lung mask; pointing game: "
                   "share of images whose CAM maximum lies inside it (test images with CAMs; "
                   "`_approx`: lung-field template, no masks). See `raybench.cam.roi`.",
                   Table(roi)]
    return blocks


def _md(blocks: list[Block], out: Path) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Figure):
            parts.append(f"![{b.caption}]({b.path.relative_to(out).as_posix()})\n\n*{b.caption}*")
        elif isinstance(b, Table):
            parts.append(to_markdown(b.frame))
        else:
            parts.append(b)
    return "\n\n".join(parts) + "\n"


def _html(blocks: list[Block], title: str) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" '
                         f'alt="{html.escape(b.caption)}"><figcaption>'
                         f"{html.escape(b.caption)}</figcaption></figure>")
        elif isinstance(b, Table):
            parts.append(b.frame.to_html(float_format=lambda v: f"{v:.4g}", na_rep="",
                                         border=0, classes="table"))
        elif b.startswith("#"):
            level = len(b) - len(b.lstrip("#"))
            parts.append(f"<h{level}>{html.escape(b.lstrip('#').strip())}</h{level}>")
        else:
            parts.append(f"<p>{html.escape(b)}</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;"
             "border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")


def write_report(uri: str, sweep: str, out: Union[str, Path],
                 results: Optional[Results] = None) -> Path:
    """Writes ``out/report.md``, ``out/report.html`` and ``out/figures/*.png``.

    Returns:
        The path of ``report.html`` (self-contained: its figures are inlined).

    Raises:
        RaybenchError: The sweep is missing or has no completed trial.
    """
    res = results or load(uri, sweep)
    out = Path(out)
    blocks = build_blocks(res, sweep, out)
    (out / "report.md").write_text(_md(blocks, out), encoding="utf-8")
    page = out / "report.html"
    page.write_text(_html(blocks, f"raybench report: {sweep}"), encoding="utf-8")
    return page


__all__ = ["write_report", "build_blocks", "cam_grid_figure"]
