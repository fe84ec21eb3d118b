"""The report's sections, in order (:func:`build_blocks`): the header, per scenario the paper
tables, per-class plots, learning curves and confusion matrices, then the statistics sections
(:mod:`raybench.report.evidence`), the trials, the sweep timeline, CAMs and ROI focus.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from raybench import schema as S
from raybench.camset import CamSet
from raybench.report.blocks import FIGURES, Block, Grid, Table, slug
from raybench.report.evidence import (
    N_BOOT, calibration_blocks, findings_blocks, interval_names, origin_blocks, ranking_blocks,
    roi_chance_note, roi_confusion_blocks, shortcut_blocks, source_blocks,
)
from raybench.report.figures import (
    cam_grid_figure, confusion_figure, gantt_figure, learning_curves_figure, sens_spec_figure,
)
from raybench.report.gpu import gpu_blocks
from raybench.report.probe import probe_blocks
from raybench.results.loading import Results
from raybench.results.tables import OVERALL, format_paper_table, whole_split
from raybench.storage import redact

log = logging.getLogger(__name__)


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
    table = res.paper_table(scenario, n_boot=N_BOOT)  # full images (other rois: shortcut)
    layout = "Table 1 layout (positive class one-vs-rest)" if not isinstance(
        table.index, pd.MultiIndex) else "Table 2 layout (per model and class)"
    blocks += [f"Test sensitivity and specificity, mean [95% interval] over seeds "
               f"({interval_names(table)}; see the README's statistics section); {layout}. "
               "n: the images of the class / of the other classes per trial.",
               Table(format_paper_table(table))]
    runs = res.completed_runs(scenario)
    models = sorted(runs[S.MODEL].unique())
    if isinstance(table.index, pd.MultiIndex):
        blocks += ["### Per-class sensitivity / specificity", Grid(tuple(
            sens_spec_figure(table, m, figs / f"sensspec-{tag}-{slug(m)}.png")
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
        matrices.append(confusion_figure(counts, m, figs / f"confusion-{tag}-{slug(m)}.png"))
    blocks += ["### Confusion matrices", "Full images only (other rois: their own section), "
               "summed over seeds; rows are true labels.", Grid(tuple(matrices))]
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
        f"{int((runs[S.STATUS] == S.STATUS_COMPLETED).sum())} completed; models: "
        f"{', '.join(sorted(runs[S.MODEL].dropna().unique()))}. "
        f"raybench {first.get(S.RAYBENCH_VERSION)}, torch {first.get(S.TORCH_VERSION)}, "
        f"ray {first.get(S.RAY_VERSION)}, timm {first.get(S.TIMM_VERSION)}; "
        f"device {first.get(S.DEVICE)}, precision {first.get(S.PRECISION)}.",
    ]
    found = res.findings(n_boot=N_BOOT)
    blocks += findings_blocks(found)
    blocks += origin_blocks(res) + probe_blocks(res, sweep, N_BOOT)
    for i, scenario in enumerate(res.scenarios()):
        blocks += _scenario_blocks(res, scenario, figs, f"s{i}")
        blocks += ranking_blocks(res, scenario, figs, f"s{i}")
        blocks += source_blocks(res, scenario, found)
    blocks += shortcut_blocks(res) + roi_confusion_blocks(res, figs)
    blocks += calibration_blocks(res, figs)
    blocks += ["## Trials", Table(_summary(res))]
    blocks += _timeline_blocks(res, figs) + gpu_blocks(res, sweep)
    cams = _cam_sets(res, sweep)
    if cams:
        blocks += ["## Class activation maps", cam_grid_figure(cams, figs / "cams.png")]
    roi = _roi_table(res)
    if roi is not None:
        blocks += ["### ROI focus",
                   "ROI focus: share of positive CAM energy inside the lung mask; pointing game: "
                   "share of images whose CAM maximum lies inside it (test images with CAMs; "
                   "`_approx`: lung-field template, no masks). See `raybench.cam.roi`.",
                   Table(roi), roi_chance_note(res)]
    return blocks


