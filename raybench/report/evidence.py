"""The report's statistics sections: test-set origin, ranking (select on validation, report on
test) with the Friedman test and a critical-difference diagram, the paired significance table
and the one-sentence answer to the paper's claim, per-source tables with flagged classes, the
shortcut control (lungs hidden) and calibration (ECE, Brier, reliability diagram).

Each ``*_blocks`` function returns report blocks (headings, paragraphs, tables, figures) or
an empty list when the results hold nothing for it; ``sections.build_blocks`` calls them.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench import bayes, stats
from raybench.compare import ROI, cells, describe_tests, rank_models, split_predictions
from raybench.errors import RaybenchError
from raybench.metrics import reliability_bins
from raybench.models.names import PAPER_MODEL
from raybench.report.blocks import Figure, Grid, Table, fmt as _fmt, fmt_p as _p
from raybench.plots import new_figure
from raybench.report.figures import confusion_figure, save_figure
from raybench.results.loading import Results
from raybench.results.tables import format_paper_table, format_significance, whole_split

log = logging.getLogger(__name__)
N_BOOT = 1000  # report intervals: 1000 replicates keep the report quick; the API defaults to 2000
HEADLINE = "balanced_accuracy"


def _distinct(values: pd.Series) -> str:
    return ", ".join(sorted({str(x) for x in values.dropna()}))


def origin_blocks(res: Results) -> list:
    """Where each scenario's test images came from (the runs' ``test_from`` / ``test_sources``)."""
    runs = res.completed_runs()
    if S.TEST_FROM not in runs or runs[S.TEST_FROM].isna().all():
        return []
    origin = runs.groupby(S.SCENARIO)[[S.TEST_FROM, S.TEST_SOURCES]].agg(_distinct)
    return ["## Test sets", "What each scenario was tested on: the origin of its test images "
            "(a `test_from` source or file, else the held-out split) and their sources.",
            Table(origin)]


def _val_test(res: Results, scenario: str) -> pd.DataFrame:
    """Per model: mean validation and test balanced accuracy of its selected trials."""
    runs = cells(res, scenario)
    runs = runs[runs[ROI] == "full"]
    m = whole_split(res.metrics)
    m = m[(m[S.CLASS] == "all") & (m[S.METRIC] == HEADLINE) & m[S.SPLIT].isin(["val", "test"])]
    wide = runs[[S.SWEEP, S.TRIAL_ID, S.MODEL]].merge(m, on=[S.SWEEP, S.TRIAL_ID])
    table = wide.pivot_table(index=S.MODEL, columns=S.SPLIT, values=S.VALUE, aggfunc="mean")
    table = table.reindex(columns=["val", "test"])
    table.columns = [f"{c} {HEADLINE}" for c in table.columns]
    table["seeds"] = runs.groupby(S.MODEL)[S.SEED].nunique()
    order = table.sort_values(f"val {HEADLINE}", ascending=False, kind="stable")
    order.insert(0, "rank (val)", range(1, len(order) + 1))
    return order.round(4)


def cd_diagram(ranks: stats.Friedman, path: Path) -> Figure:
    """Demšar's critical-difference diagram: mean ranks on an axis (1 = best, left), a bar of
    the Nemenyi CD, and thick lines joining models whose ranks differ by less than the CD."""
    k = len(ranks.models)
    order = np.argsort(ranks.mean_ranks)
    r = np.asarray(ranks.mean_ranks)[order]
    names = [ranks.models[i] for i in order]
    fig = new_figure((7, 1.6 + 0.28 * k))
    ax = fig.subplots()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k + 2) * 0.35, 1.2)
    ax.hlines(0, 1, k, color="black")
    for t in range(1, k + 1):
        ax.vlines(t, -0.08, 0.08, color="black")
        ax.text(t, 0.18, str(t), ha="center", fontsize=8)
    for i, (rank, name) in enumerate(zip(r, names, strict=True)):
        y = -0.35 * (i + 1)
        ax.plot([rank, rank], [0, y], color="C0", lw=0.8)
        ax.text(rank + 0.05, y, f"{name} ({rank:.2f})", va="center", fontsize=8)
    if not math.isnan(ranks.cd):
        ax.plot([1, 1 + ranks.cd], [0.75, 0.75], color="black", lw=2)
        ax.text(1 + ranks.cd / 2, 0.9, f"CD = {ranks.cd:.2f}", ha="center", fontsize=8)
        last = -1
        for i in range(k):  # maximal groups of models within one CD of each other
            j = max(jj for jj in range(i, k) if r[jj] - r[i] <= ranks.cd)
            if j > i and j > last:
                ax.plot([r[i], r[j]], [-0.12 - 0.08 * (i % 3)] * 2, color="black", lw=3)
                last = j
    ax.axis("off")
    caption = (f"critical-difference diagram over {ranks.n_blocks} block(s) (scenario x seed): "
               f"mean rank of test {HEADLINE}, Nemenyi CD at alpha 0.05")
    return save_figure(fig, path, caption)


def _claim(table: pd.DataFrame, baseline: str) -> Optional[str]:
    """One sentence per comparison with ``baseline``: difference, interval, Holm p."""
    rows = table[(table[S.METRIC] == HEADLINE) & (table[S.CLASS] == "all")]
    if rows.empty:
        return None
    parts = []
    for _, row in rows.iterrows():
        covers = row[S.CI_LOW] <= 0 <= row[S.CI_HIGH]
        verdict = "no difference shown" if covers else (
            f"{baseline} {'better' if row['diff'] < 0 else 'worse'}")
        parts.append(f"{baseline} vs {row[S.MODEL]}: {HEADLINE.replace('_', ' ')} "
                     f"{-row['diff']:+.3f} [{-row[S.CI_HIGH]:+.3f}, {-row[S.CI_LOW]:+.3f}], "
                     f"p = {_p(row['p_holm'])} (Holm; {verdict})")
    return "; ".join(parts) + "."


def ranking_blocks(res: Results, scenario: str, figs: Path, tag: str) -> list:
    """Ranking by validation with test values, Friedman / CD diagram, significance, claim."""
    blocks: list = [f"### Ranking and significance: {scenario}",
                    "Models ranked by validation balanced accuracy (select on validation); the "
                    "test column is what the ranking reports.", Table(_val_test(res, scenario))]
    ranks = rank_models(res, scenario=scenario)
    if ranks is not None and len(ranks.models) >= 3:
        blocks.append(f"Friedman test over {ranks.n_blocks} block(s): chi2 = "
                      f"{_fmt(ranks.statistic)}, p = {_p(ranks.pvalue)}; Nemenyi CD = "
                      f"{_fmt(ranks.cd, 2)} ranks.")
        blocks.append(cd_diagram(ranks, figs / f"cd-{tag}.png"))
    models = sorted(cells(res, scenario)[S.MODEL].unique())
    baseline = PAPER_MODEL if PAPER_MODEL in models else (ranks.models[int(np.argmin(ranks.mean_ranks))]
                                                  if ranks else None)
    try:
        table = res.compare_models(["balanced_accuracy", "macro_auc", "accuracy"], scenario,
                                   baseline, n_boot=N_BOOT)
    except RaybenchError as exc:
        log.info("no significance table for %s: %s", scenario, exc)
        return blocks
    table = table[table[ROI] == "full"]
    claim = _claim(table, baseline) if baseline else None
    if claim:
        blocks.append(f"**The paper's claim, tested:** {claim}")
    blocks += [f"Paired comparison against {baseline or 'each other model'} on the same test "
               f"images (model minus baseline), {table['resampled'].iloc[0]} resampled; "
               f"p-values and 95% intervals (the `test` column): {describe_tests(table)}; "
               "`p_holm`: Holm across the comparisons of one metric.",
               Table(format_significance(table))]
    verdicts = bayes.verdict_sentences(table)
    if verdicts:
        blocks.append(f"Bayesian verdict on balanced accuracy over the seeds (region of practical "
                      f"equivalence +-{bayes.ROPE:g}; Bayesian t-test, `p_equivalent` in "
                      f"`compare_models`): " + "; ".join(verdicts) + ".")
    return blocks


def source_blocks(res: Results, scenario: str, found: pd.DataFrame) -> list:
    """Per-source sensitivity / specificity with n, and the source gaps among ``found``."""
    try:
        table = res.paper_table(scenario, layout="table2", by_source=True, n_boot=N_BOOT)
    except RaybenchError:
        return []
    blocks: list = [f"### Per source: {scenario}",
                    "Test sensitivity and specificity per source of the test images, mean "
                    f"[95% interval] ({interval_names(table)}); n: the images of the class / "
                    "of the other classes per trial. A model that works on one hospital's "
                    "images only shows here.", Table(format_paper_table(table))]
    gaps = found[(found["kind"] == "source gap") & (found[S.SCENARIO] == scenario)]
    blocks.append("Flagged (the gap between two sources, paired within seeds, has a 95% "
                  "interval that excludes 0): " + " ".join(gaps["finding"]) if len(gaps) else
                  "No class's sensitivity or specificity differs between sources (paired "
                  "within seeds, 95% interval).")
    return blocks


def interval_names(table: pd.DataFrame) -> str:
    """The interval methods of a paper table's rows, from its ``interval`` column."""
    return "intervals: " + ", ".join(sorted({str(v) for v in table["interval"].dropna()}))


def findings_blocks(found: pd.DataFrame) -> list:
    """The report's first section: every finding, most severe first."""
    if found.empty:
        return []
    cols = ["severity", "kind", S.SCENARIO, S.MODEL, "finding", "section"]
    return ["## Findings",
            "What the study found, most severe first. Each row names the section below whose "
            "numbers it states.", Table(found[cols].fillna("").reset_index(drop=True))]


def shortcut_blocks(res: Results) -> list:
    """Accuracy with the lungs hidden, and the paired comparison of each roi with ``full``."""
    runs = cells(res)
    if not {"full", "outside_lungs"} <= set(runs[ROI]):
        return []
    m = whole_split(res.metrics)
    m = m[(m[S.SPLIT] == "test") & (m[S.CLASS] == "all") & m[S.METRIC].isin(
        ["accuracy", HEADLINE])]
    wide = runs.merge(m, on=[S.SWEEP, S.TRIAL_ID]).pivot_table(
        index=[S.SCENARIO, S.MODEL, S.METRIC], columns=ROI, values=S.VALUE, aggfunc="mean")
    blocks: list = ["## Shortcut control: the lungs hidden",
                    "Runs trained and tested with the lung fields blanked (`outside_lungs`) "
                    "or everything else blanked (`lungs_only`). A model that still separates "
                    "the classes with the lungs hidden decides from shortcuts (text markers, "
                    "devices, the hospital)."]
    for (scenario, model), part in wide.groupby(level=[S.SCENARIO, S.MODEL]):
        acc = part.xs("accuracy", level=S.METRIC)
        if "outside_lungs" not in acc or acc["outside_lungs"].isna().all():
            continue
        blocks.append(f"**{model} ({scenario}): accuracy with the lungs hidden "
                      f"{_fmt(float(acc['outside_lungs'].iloc[0]))}** (full images "
                      f"{_fmt(float(acc['full'].iloc[0]))}).")
    try:
        table = res.compare_models([HEADLINE, "accuracy"], None, "full", by=ROI, n_boot=N_BOOT)
        blocks += ["Paired comparison with `full` (roi minus full, same test images); "
                   f"p-values and 95% intervals: {describe_tests(table)}.",
                   Table(format_significance(table))]
    except RaybenchError as exc:
        log.info("no shortcut comparison: %s", exc)
    return blocks


def roi_confusion_blocks(res: Results, figs: Path) -> list:
    """Confusion matrices of the trials with another roi than ``full`` (the main ones are
    full images only), one per scenario, model and roi."""
    runs = cells(res)
    others = runs[runs[ROI] != "full"][[S.SCENARIO, S.MODEL, ROI]].drop_duplicates()
    figures = []
    for i, (scenario, model, roi) in enumerate(others.sort_values([S.SCENARIO, S.MODEL, ROI])
                                               .itertuples(index=False)):
        try:
            counts = res.confusion(str(model), str(scenario), roi=str(roi))
        except RaybenchError as exc:
            log.info("no %s confusion matrix for %s: %s", roi, model, exc)
            continue
        figures.append(confusion_figure(counts, f"{model} ({roi}, {scenario})",
                                        figs / f"confusion-roi{i}.png"))
    if not figures:
        return []
    return ["## Confusion matrices with other rois",
            "Test confusion matrices of the trials trained and tested with part of the image "
            "blanked, summed over seeds; rows are true labels.", Grid(tuple(figures))]


def reliability_figure(res: Results, path: Path) -> Optional[Figure]:
    """Reliability diagram: per model (its selected trials' test predictions pooled),
    accuracy against confidence per bin, with the diagonal of perfect calibration."""
    try:
        preds = split_predictions(res, "test")
    except RaybenchError:
        return None
    runs = cells(res)
    runs = runs[runs[ROI] == "full"]
    preds = preds.merge(runs[[S.SWEEP, S.TRIAL_ID, S.MODEL]], on=[S.SWEEP, S.TRIAL_ID])
    if preds.empty:
        return None
    fig = new_figure((4.2, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", lw=1, label="perfect")
    for model, part in preds.groupby(S.MODEL):
        cols = [str(c) for c in part if str(c).startswith(S.PROB_PREFIX)
                and part[c].notna().all()]
        labels = [c[len(S.PROB_PREFIX):] for c in cols]
        part = part[part[S.LABEL].isin(labels)]
        y = np.array([labels.index(v) for v in part[S.LABEL]], dtype=np.int64)
        rel = reliability_bins(y, part[cols].to_numpy(float), bins=10)
        full = rel.count > 0
        ax.plot(rel.confidence[full], rel.accuracy[full], marker="o", label=str(model))
    ax.set(xlabel="confidence (max probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title="reliability (test)")
    ax.legend(fontsize=7)
    return save_figure(fig, path, "reliability diagram: test accuracy per confidence bin "
                            "(10 bins), per model")


def calibration_blocks(res: Results, figs: Path) -> list:
    """ECE and Brier score per trial, and the reliability diagram."""
    m = whole_split(res.metrics)
    rows = m[(m[S.SPLIT] == "test") & (m[S.CLASS] == "all") & m[S.METRIC].isin(["ece", "brier"])]
    if rows.empty:
        return []
    table = res.with_runs(rows, [S.MODEL, S.SCENARIO]).pivot_table(
        index=[S.SCENARIO, S.MODEL], columns=S.METRIC, values=S.VALUE, aggfunc="mean").round(4)
    blocks: list = ["## Calibration",
                    "Expected calibration error (15 equal-width confidence bins) and the "
                    "multiclass Brier score on test, mean over seeds; lower is better.",
                    Table(table)]
    fig = reliability_figure(res, figs / "reliability.png")
    return blocks + ([fig] if fig else [])


def roi_chance_note(res: Results) -> str:
    """ROI focus against its chance level: the lung masks' share of the images with CAMs."""
    m = res.metrics
    rows = m[(m[S.CLASS] == "all") & m[S.METRIC].isin(["roi_chance", "roi_chance_approx"])]
    if len(rows):
        chance = float(rows[S.VALUE].mean())
        what = "the lung masks' mean share of the test images with CAMs"
    else:  # results written before roi_chance rows existed
        from raybench.data.masks import lung_field_template

        sizes = res.runs[S.IMAGE_SIZE].dropna() if S.IMAGE_SIZE in res.runs else pd.Series(
            dtype=int)
        size = int(sizes.iloc[0]) if len(sizes) else 224
        chance = float(lung_field_template(size).mean())
        what = f"the lung-field template's share of a {size} px image"
    return (f"Chance level of ROI focus: {chance:.3f}, {what} (a map spread evenly scores "
            "this). A `roi_focus` below it means the model looks at the lungs less than a "
            "uniform map would.")
