"""What a study found, one row per verdict: ``Results.findings()``, ``raybench results --table
findings`` and the report's first section.

Each row has its ``kind`` (:data:`KINDS`: the kind each detector is registered under),
``severity`` (``critical``, ``warning``, ``info``), ``scenario``, ``model``, the plain sentence
(``finding``) with its numbers, the main number (``value``) with its ``n`` (images) and the
report ``section`` the numbers come from. The numbers are read from the same tables the report
shows (full-image trials, one per cell and seed: the best on validation; test split).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import pandas as pd

from raybench import bayes, gaps
from raybench import schema as S
from raybench.compare import (
    ROI,
    TEST_NAMES,
    CompareOptions,
    Tables,
    cells,
    compare_models,
    split_predictions,
)
from raybench.errors import RaybenchError
from raybench.registry import Registry



class Study(Tables, Protocol):
    """What the findings read of the results (``raybench.results.Results`` has it); a
    protocol, so this module never imports ``results``, whose ``Results.findings`` runs it."""

    @property
    def runs(self) -> pd.DataFrame: ...

    def scenarios(self) -> list[str]: ...

SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
COLUMNS: list[str] = ["kind", "severity", S.SCENARIO, S.MODEL, "finding", S.VALUE, "n",
                      "section"]
HEADLINE = "balanced_accuracy"
COLLAPSE_SHARE = 0.9  # one class predicted for more than this share of the test set
ECE_LIMIT = 0.1
MIN_SEEDS = 3
KEPT_SHARE = 0.5  # lungs hidden: keeping half of the skill above chance is a shortcut
DECISIVE = 0.9  # a Bayesian verdict is stated when one of its probabilities reaches this


def _row(severity: str, section: str, text: str, scenario: Optional[str] = None,
         model: Optional[str] = None, value: float = math.nan, n: Optional[float] = None) -> dict:
    """A finding without its kind (:func:`findings` adds the kind its detector is registered
    under)."""
    return {"severity": severity, S.SCENARIO: scenario, S.MODEL: model,
            "finding": text, S.VALUE: value, "n": n, "section": section}


def _full(res: Study, scenario: Optional[str] = None) -> pd.DataFrame:
    runs = cells(res, scenario)
    return runs[runs[ROI] == "full"]


def _metric(res: Study, runs: pd.DataFrame, metric: str, split: str = "test",
            cls: str = "all") -> pd.DataFrame:
    """Whole-split rows of one metric, merged with ``runs`` (model, scenario, seed, roi)."""
    m = res.metrics
    whole = m[S.SOURCE].isna() if S.SOURCE in m else True
    m = m[whole & (m[S.SPLIT] == split) & (m[S.CLASS] == cls) & (m[S.METRIC] == metric)]
    return runs[[S.SWEEP, S.TRIAL_ID, S.SCENARIO, S.MODEL, S.SEED, ROI]].merge(
        m[[S.SWEEP, S.TRIAL_ID, S.VALUE]], on=[S.SWEEP, S.TRIAL_ID])


def _n_test(res: Study, runs: pd.DataFrame) -> Optional[float]:
    n = _metric(res, runs, "n")[S.VALUE]
    return float(round(n.mean())) if len(n) else None


def _ranking(res: Study, scenario: Optional[str]) -> pd.DataFrame:
    """Per model: mean validation and test balanced accuracy and seeds, best on val first
    (over every scenario when ``scenario`` is None)."""
    runs = _full(res, scenario)
    val = _metric(res, runs, HEADLINE, "val").groupby(S.MODEL)[S.VALUE].mean()
    test = _metric(res, runs, HEADLINE, "test").groupby(S.MODEL)[S.VALUE].mean()
    table = pd.DataFrame({"val": val, "test": test,
                          "seeds": runs.groupby(S.MODEL)[S.SEED].nunique()}).dropna(
                              subset=["test"])
    return table.sort_values(["val", "test"], ascending=False, kind="stable")


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _versus(res: Study, scenario: str, best: str, runner: str, n_boot: int) -> str:
    """``significantly better than`` or not, from the paired comparison (Holm)."""
    try:
        table = compare_models(res, HEADLINE, scenario, runner, CompareOptions(n_boot=n_boot))
    except RaybenchError as exc:
        return f"; not compared with the runner-up {runner} ({exc})"
    row = table[(table[S.MODEL] == best) & (table[ROI] == "full")]
    if row.empty:
        return f"; not compared with the runner-up {runner} (no shared seed)"
    r = row.iloc[0]
    sig = r["p_holm"] < 0.05 and (r[S.CI_LOW] > 0 or r[S.CI_HIGH] < 0)
    verdict = "significantly better than" if sig and r["diff"] > 0 else (
        "significantly worse on test than" if sig else "not significantly better than")
    return (f"; {verdict} the runner-up {runner}: {r['diff']:+.3f} [{r[S.CI_LOW]:+.3f}, "
            f"{r[S.CI_HIGH]:+.3f}], p = {_p(r['p_holm'])} (Holm; "
            f"{TEST_NAMES.get(r['test'], r['test'])})")


def best_model(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """The model first on validation, its test value, and whether it beats the runner-up."""
    table = _ranking(res, scenario)
    if table.empty:
        return []
    best = str(table.index[0])
    n = _n_test(res, _full(res, scenario))
    text = (f"{best} ranks first on validation balanced accuracy ({table['val'].iloc[0]:.3f}; "
            f"test {table['test'].iloc[0]:.3f} on {n:.0f} test images, "
            f"{table['seeds'].iloc[0]} seed(s))" if n else f"{best} ranks first")
    if len(table) > 1:
        text += _versus(res, scenario, best, str(table.index[1]), n_boot)
    return [_row("info", f"Ranking and significance: {scenario}", text + ".",
                 scenario, best, float(table["test"].iloc[0]), n)]


def selection_disagreement(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """The model first on validation is not first on test."""
    table = _ranking(res, scenario)
    if len(table) < 2 or table["val"].isna().all():
        return []
    val, test = _floats(table["val"]), _floats(table["test"])
    on_val, on_test = str(table.index[0]), max(test, key=lambda m: test[m])
    if on_val == on_test:
        return []
    text = (f"{on_val} ranks first on validation ({val[on_val]:.3f}) but {on_test} ranks first "
            f"on test ({test[on_test]:.3f} against {test[on_val]:.3f}): the validation set did "
            "not pick the test winner.")
    return [_row("warning", f"Ranking and significance: {scenario}",
                 text, scenario, on_test, test[on_test])]


def _floats(column: pd.Series) -> dict[str, float]:
    return {str(k): float(v) for k, v in column.items()}


def few_seeds(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """Fewer than :data:`MIN_SEEDS` seeds per cell."""
    runs = _full(res, scenario)
    seeds = int(runs.groupby(S.MODEL)[S.SEED].nunique().min()) if len(runs) else 0
    if not 0 < seeds < MIN_SEEDS:
        return []
    text = (f"{seeds} seed(s) per model: the seed-to-seed spread rests on {seeds - 1} degree(s) "
            "of freedom, so an interval widens a lot when the seeds disagree and the Friedman "
            f"ranking has {seeds} block(s) per scenario; run {MIN_SEEDS} or more seeds before "
            "trusting a ranking.")
    return [_row("warning", "Trials", text, scenario, None, float(seeds))]


def source_gap(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """A class whose sensitivity or specificity differs between two sources: the paired gap
    within seeds has an interval that excludes 0 (:mod:`raybench.gaps`)."""
    table = gaps.significant_gaps(gaps.source_gaps(res, scenario, n_boot=n_boot))
    return [_row("warning", f"Per source: {scenario}", gaps.gap_sentence(r),
                 scenario, str(r[S.MODEL]), abs(float(r["gap"]))) for _, r in table.iterrows()]


def _top_two(res: Study, scenario: Optional[str]) -> tuple[list[str], pd.DataFrame]:
    """The two models first in :func:`_ranking` (all scenarios when None) and the test
    balanced accuracy of both per scenario x seed block where both have one."""
    pair = [str(m) for m in _ranking(res, scenario).index[:2]]
    test = _metric(res, _full(res, scenario), HEADLINE, "test")
    wide = test.pivot_table(index=[S.SCENARIO, S.SEED], columns=S.MODEL, values=S.VALUE)
    return pair, (wide[pair].dropna() if len(pair) == 2 else wide.iloc[:0])


def _verdict_row(v: bayes.Verdict, a: str, b: str, blocks: str, scenario: Optional[str]
                 ) -> dict:
    """The verdict when its largest probability reaches :data:`DECISIVE`, else "none"."""
    probs = (f"P({a} better) {v.p_a:.2f}, P(equivalent) {v.p_rope:.2f}, P({b} better) "
             f"{v.p_b:.2f}")
    if max(v.p_a, v.p_rope, v.p_b) >= DECISIVE:
        text = (f"{v.sentence(a, b)} on test balanced accuracy ({v.test} over {v.n} {blocks}; "
                f"{probs}).")
    else:
        text = (f"No Bayesian verdict between {a} and {b} on test balanced accuracy: {probs} "
                f"({v.test} over {v.n} {blocks}; none reaches {DECISIVE:g}).")
    section = f"Ranking and significance: {scenario}" if scenario else "Ranking and significance"
    return _row("info", section, text, scenario, a, max(v.p_a, v.p_rope, v.p_b))


def equivalence(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """The Bayesian verdict between the two models first on validation (:mod:`raybench.bayes`):
    over this scenario's seeds (Bayesian t-test), and, once per study with several scenarios,
    over every scenario x seed block (Bayesian signed-rank test, with the first scenario)."""
    rows = []
    (pair, wide) = _top_two(res, scenario)
    if len(wide) >= 2:
        v = bayes.t_verdict((wide[pair[1]] - wide[pair[0]]).tolist())
        rows.append(_verdict_row(v, pair[0], pair[1], "seeds", scenario))
    scenarios = res.scenarios()
    if len(scenarios) > 1 and scenario == scenarios[0]:
        (pair, wide) = _top_two(res, None)
        if wide.index.get_level_values(S.SCENARIO).nunique() > 1:
            v = bayes.signed_rank_verdict((wide[pair[1]] - wide[pair[0]]).tolist())
            rows.append(_verdict_row(v, pair[0], pair[1], "scenario x seed blocks", None))
    return rows


def collapsed_model(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """A model that predicts one class for more than :data:`COLLAPSE_SHARE` of the test set."""
    try:
        preds = split_predictions(res, "test")
    except RaybenchError:
        return []
    runs = _full(res, scenario)
    preds = preds.merge(runs[[S.SWEEP, S.TRIAL_ID, S.MODEL, S.SEED]], on=[S.SWEEP, S.TRIAL_ID])
    rows = []
    for model, part in preds.groupby(S.MODEL, sort=True):
        share = part[S.PREDICTED].value_counts(normalize=True)
        if len(share) and share.iloc[0] > COLLAPSE_SHARE:
            seeds = part[S.SEED].nunique()
            text = (f"{model} predicts {share.index[0]} for {share.iloc[0]:.0%} of its "
                    f"{len(part) // seeds} test images (pooled over {seeds} seed(s)): it has "
                    "collapsed to one class, and its other numbers mean little.")
            rows.append(_row("critical", f"Scenario: {scenario}", text,
                             scenario, str(model), float(share.iloc[0]), len(part) / seeds))
    return rows


def calibration(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """Expected calibration error above :data:`ECE_LIMIT`."""
    runs = _full(res, scenario)
    ece = _metric(res, runs, "ece").groupby(S.MODEL)[S.VALUE].agg(["mean", "count"])
    n = _n_test(res, runs)
    rows = []
    for model, r in ece[ece["mean"] > ECE_LIMIT].iterrows():
        text = (f"{model}: expected calibration error {r['mean']:.3f} on test "
                f"({n:.0f} images, mean over {int(r['count'])} seed(s)), above {ECE_LIMIT}: "
                f"its confidence is off by about {100 * r['mean']:.0f} points on average, so its "
                "probabilities are not risks.")
        rows.append(_row("warning", "Calibration", text, scenario, str(model),
                         float(r["mean"]), n))
    return rows


def test_origin(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """Whether the test set is an in-distribution split or came from ``test_from``."""
    runs = _full(res, scenario)
    origin = runs[S.TEST_FROM].dropna() if S.TEST_FROM in runs else pd.Series(dtype=object)
    sources = runs[S.TEST_SOURCES].dropna() if S.TEST_SOURCES in runs else origin[:0]
    where = f" (sources: {sources.iloc[0]})" if len(sources) else ""
    n = _n_test(res, runs)
    if len(origin):
        text = (f"{scenario} is tested on {origin.iloc[0]}{where}: images from outside the "
                "training split, so the scores say how the models travel.")
    else:
        text = (f"{scenario} is tested on a held-out split of its own data{where}: "
                "in-distribution, so the scores do not say how the models do at another "
                "hospital.")
    return [_row("info", "Test sets", text, scenario, None, math.nan, n)]


def roi_chance(res: Study, runs: pd.DataFrame, suffix: str = "") -> pd.Series:
    """The ROI focus a map spread evenly scores, per model: the lung masks' mean area share
    of the images with CAMs (``roi_chance`` rows), else the lung-field template's share."""
    chance = _metric(res, runs, f"roi_chance{suffix}").groupby(S.MODEL)[S.VALUE].mean()
    missing = sorted(set(runs[S.MODEL]) - set(chance.index))
    if missing:  # results written before roi_chance rows existed
        from raybench.data.masks import lung_field_template

        sizes = res.runs[S.IMAGE_SIZE].dropna().tolist() if S.IMAGE_SIZE in res.runs else []
        share = float(lung_field_template(int(sizes[0]) if sizes else 224).mean())
        chance = pd.concat([chance, pd.Series(share, index=missing)])
    return chance


def roi_focus(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """ROI focus at or below its chance level (the lung masks' share of the image)."""
    runs = _full(res, scenario)
    rows = []
    for suffix in ("", "_approx"):
        focus = _metric(res, runs, f"roi_focus{suffix}")
        if focus.empty:
            continue
        chances = roi_chance(res, runs, suffix)
        count = _metric(res, runs, f"roi_n{suffix}").groupby(S.MODEL)[S.VALUE].mean()
        for model, value in focus.groupby(S.MODEL)[S.VALUE].mean().items():
            chance = float(chances.get(model, math.nan))
            if value > chance:
                continue
            n = float(count.get(model, math.nan))
            text = (f"{model}: ROI focus {value:.3f}, at or below the chance level {chance:.3f} "
                    f"(a uniform map; {n:.0f} test images with CAMs): the model does not look "
                    "at the lungs more than at the rest of the film.")
            rows.append(_row("warning", "ROI focus", text, scenario, str(model),
                             float(value), n))
    return rows


def lungs_hidden(res: Study, scenario: str, n_boot: int) -> list[dict]:
    """Balanced accuracy kept when the lung fields are blanked (``roi: outside_lungs``)."""
    runs = cells(res, scenario)
    if not {"full", "outside_lungs"} <= set(runs[ROI]):
        return []
    ba = _metric(res, runs, HEADLINE).pivot_table(index=S.MODEL, columns=ROI, values=S.VALUE)
    k = res.metrics.loc[res.metrics[S.METRIC] == "support", S.CLASS].nunique()
    chance = 1.0 / k if k else math.nan
    n = _n_test(res, runs)
    rows = []
    for model, r in ba.dropna(subset=["full", "outside_lungs"]).iterrows():
        hidden, full = float(r["outside_lungs"]), float(r["full"])
        kept = (hidden - chance) / (full - chance) if full > chance else math.inf
        shortcut = hidden > chance and kept >= KEPT_SHARE
        tail = ("it decides without the lungs: shortcuts (markers, devices, the hospital)"
                if shortcut else "it needs the lungs")
        text = (f"{model} with the lungs hidden: test balanced accuracy {hidden:.3f} against "
                f"{full:.3f} with them (chance {chance:.3f}); {tail}.")
        rows.append(_row("critical" if shortcut else "info",
                         "Shortcut control: the lungs hidden", text, scenario, str(model),
                         hidden, n))
    return rows


@dataclass(frozen=True)
class Detector:
    """A kind of finding and the function that finds it.

    Attributes:
        kind: The ``kind`` column of its rows.
        detect: ``detect(results, scenario, n_boot)`` -> the rows (without ``kind``).
    """

    kind: str
    detect: Callable[[Study, str, int], list[dict]]


#: Every detector, keyed by its function's name; their order is the report's order of kinds.
FINDING_DETECTORS: Registry[Detector] = Registry("finding detector")


def _add(kind: str, detect: Callable[[Study, str, int], list[dict]]) -> None:
    FINDING_DETECTORS.register(detect.__name__, Detector(kind, detect))


_add("best model", best_model)
_add("verdict", equivalence)
_add("source gap", source_gap)
_add("collapsed model", collapsed_model)
_add("ROI focus", roi_focus)
_add("lungs-hidden control", lungs_hidden)
_add("calibration", calibration)
_add("test origin", test_origin)
_add("selection disagreement", selection_disagreement)
_add("few seeds", few_seeds)

#: The kinds of finding, in the order :func:`findings` sorts them (within a severity).
KINDS: tuple[str, ...] = tuple(FINDING_DETECTORS.get(k).kind for k in FINDING_DETECTORS)


def findings(res: Study, n_boot: int = 1000) -> pd.DataFrame:
    """Every verdict of every scenario, most severe first (see :data:`KINDS`)."""
    detectors = [FINDING_DETECTORS.get(key) for key in FINDING_DETECTORS]
    rows = [{"kind": d.kind, **row} for scenario in res.scenarios() for d in detectors
            for row in d.detect(res, scenario, n_boot)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    kinds = {k: i for i, k in enumerate(KINDS)}
    frame = frame.sort_values(
        ["severity", "kind", S.SCENARIO, S.MODEL], kind="stable",
        key=lambda c: c.map(order) if c.name == "severity" else (
            c.map(kinds) if c.name == "kind" else c))
    return frame.reset_index(drop=True)
