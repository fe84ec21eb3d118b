"""results.py: load, paper tables (Table 1 / Table 2), leaderboard, compare, CLI output."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from raybench.errors import RaybenchError
from raybench.metrics import wilson_interval
from raybench.results import format_paper_table, load
from raybench.stats import mean_interval, t95
from raybench.store import ResultStore
from tests.helpers.resultdata import FOUR, write_scenario2, write_trial


@pytest.fixture
def root(tmp_path: Path) -> str:
    store = ResultStore(str(tmp_path))
    write_scenario2(store)
    return str(tmp_path)


def test_tables_are_joinable_and_hold_hyperparameters(root: str) -> None:
    res = load(root, "s2")
    assert len(res.runs) == 4 and {"lr", "batch_size", "image_size", "torch_version"} <= set(res.runs)
    assert len(res.metrics) == 4 * (5 * 4 + 4) and len(res.epochs) == 4 * 3
    assert len(res.predictions) == 4 * 40
    joined = res.metrics.merge(res.runs[["trial_id", "model", "seed", "lr"]], on="trial_id")
    acc = joined.query("model == 'resnet18' and metric == 'accuracy'").sort_values("seed")
    assert acc["value"].tolist() == [0.85, 0.85]
    assert res.with_runs(res.epochs)["lr"].eq(3e-4).all()


def test_table2_mean_and_t_interval_over_seeds(root: str) -> None:
    table = load(root).paper_table("scenario2", interval="t")
    assert list(table.index.names) == ["model", "class"]
    assert table.index.get_level_values("class")[:4].tolist() == list(FOUR)  # paper order
    row = table.loc[("cnnx", "covid19")]
    half = 12.706 * pd.Series([1.0, 0.9]).std() / math.sqrt(2)
    assert row["sensitivity"] == pytest.approx(0.95)
    assert row["sensitivity_low"] == pytest.approx(0.95 - half)
    assert row["sensitivity_high"] == 1.0  # clipped to a proportion's range
    # Viral images predicted wrong go to covid19: seed 0 has 4 FP, seed 1 has 6 of 30 negatives.
    assert row["specificity"] == pytest.approx((26 / 30 + 24 / 30) / 2)
    assert row["seeds"] == 2
    assert (row["n"], row["n_rest"], row["interval"]) == (10, 30, "t over seeds")
    same = table.loc[("resnet18", "normal")]
    assert (same["sensitivity"], same["sensitivity_low"], same["sensitivity_high"]) == (1.0, 1.0, 1.0)


def test_table2_default_is_the_two_level_bootstrap(root: str) -> None:
    """Same means as the t table; the interval combines 2 seeds and 10 images per class."""
    res = load(root)
    boot, t = res.paper_table("scenario2"), res.paper_table("scenario2", interval="t")
    assert {v.split(",")[0] for v in boot["interval"]} == {"two-level bootstrap"}
    assert all("seed variance pooled across the table (prior dof: sensitivity " in v
               for v in boot["interval"] if v != "two-level bootstrap")
    raw = res.paper_table("scenario2", interval="unpooled")
    assert set(raw["interval"]) == {"two-level bootstrap"}
    assert boot[["sensitivity", "specificity", "seeds", "n", "n_rest"]].equals(
        t[["sensitivity", "specificity", "seeds", "n", "n_rest"]])
    row = boot.loc[("cnnx", "covid19")]  # seeds 10/10 and 9/10 right
    # pooled on the logit scale: the upper end nears 1 without the clip reaching it
    assert 0.4 < row["sensitivity_low"] < 0.95 < row["sensitivity_high"] <= 1.0
    assert row["sensitivity_low"] > t.loc[("cnnx", "covid19"), "sensitivity_low"]
    same = boot.loc[("resnet18", "normal")]  # 10 of 10 in both seeds: censored at 1, so
    # it borrows the table's pooled seed variance instead of claiming a zero-width [1, 1]
    assert same["sensitivity_low"] < 1.0 == same["sensitivity_high"] == same["sensitivity"]
    again = res.paper_table("scenario2")  # seeded: the same interval every time
    assert again.equals(boot)
    with pytest.raises(RaybenchError, match="interval 'wald'"):
        res.paper_table("scenario2", interval="wald")


def test_table1_single_seed_uses_wilson_and_ignores_unfinished(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    two = ("normal", "covid19")
    write_trial(store, "s1", "vgg16-seed0", model="vgg16", seed=0, scenario="scenario1",
                labels=two, n=20, correct={"normal": 18, "covid19": 15})
    write_trial(store, "s1", "vgg16-seed1", model="vgg16", seed=1, scenario="scenario1",
                labels=two, n=20, correct={"normal": 1, "covid19": 1}, status="stopped")
    res = load(str(tmp_path))
    table = res.paper_table(interval="t")
    assert table.index.tolist() == ["vgg16"]
    row = table.loc["vgg16"]
    assert row["sensitivity"] == pytest.approx(15 / 20)  # covid19 is Table 1's positive class
    assert (row["sensitivity_low"], row["sensitivity_high"]) == pytest.approx(wilson_interval(15, 20))
    assert row["specificity"] == pytest.approx(18 / 20) and row["seeds"] == 1
    assert row["interval"] == "wilson (one trial)"
    boot = res.paper_table().loc["vgg16"]  # one seed: the bootstrap over the 40 images
    assert boot["sensitivity"] == pytest.approx(15 / 20) and boot["seeds"] == 1
    assert (boot["sensitivity_low"], boot["sensitivity_high"]) == pytest.approx(
        wilson_interval(15, 20), abs=0.08)


def test_interval_helpers() -> None:
    assert t95(1) == 12.706 and t95(30) == 2.042 and t95(1000) == pytest.approx(1.9623, abs=1e-3)
    mean, low, high = mean_interval([0.6, 0.7, 0.8])
    assert mean == pytest.approx(0.7) and high - mean == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert math.isnan(mean_interval([])[0])


def test_leaderboard_and_compare(root: str) -> None:
    store = ResultStore(root)
    for seed in (0, 1):
        write_trial(store, "s2b", f"cnnx-seed{seed}", model="cnnx", seed=seed, scenario="scenario2",
                    labels=FOUR, n=10, correct=dict.fromkeys(FOUR, 10), lr=1e-3)
    res = load(root, "s2")
    board = res.leaderboard("balanced_accuracy")
    assert board["trial_id"].tolist()[2:] == ["cnnx-seed0", "cnnx-seed1"]
    assert board["balanced_accuracy"].tolist() == pytest.approx([0.85, 0.85, 0.825, 0.7])
    assert {"model", "lr", "seed"} <= set(board.columns)
    covid = res.leaderboard("sensitivity", cls="covid19")
    assert covid.loc[0, "sensitivity"] == 1.0
    with pytest.raises(RaybenchError, match="no test rows for metric 'f2'"):
        res.leaderboard("f2")
    diff = res.compare("s2", "s2b")
    row = diff.loc[("cnnx", "accuracy")]
    assert row["s2"] == pytest.approx((0.825 + 0.7) / 2) and row["s2b"] == 1.0
    assert row["delta"] == pytest.approx(1.0 - 0.7625) and row["n_s2b"] == 2
    assert math.isnan(diff.loc[("resnet18", "accuracy"), "s2b"])
    both = load(root)
    assert both.sweeps == ["s2", "s2b"] and len(both.runs) == 6


def test_confusion_from_predictions(root: str) -> None:
    counts = load(root).confusion("cnnx")
    assert counts.index.tolist() == list(FOUR) and counts.columns.tolist() == list(FOUR)
    assert counts.loc["viral", "viral"] == 6 + 4 and counts.loc["viral", "covid19"] == 4 + 6
    assert counts.to_numpy().sum() == 80


def test_cli_results_formats(root: str, run_cli) -> None:
    code, out, err = run_cli("results", root, "--sweep", "s2", "--table", "paper",
                             "--format", "markdown")
    assert code == 0, err
    assert "| cnnx | covid19 | 0.950 [0.315, 1.000] | 0.833 [0.410, 1.000] | 2 | 10 / 30 | t over" \
        not in out  # the default interval is the two-level bootstrap
    cell = format_paper_table(load(root).paper_table()).loc[("cnnx", "covid19")]
    assert f"| cnnx | covid19 | {cell['Sensitivity']} | {cell['Specificity']} | 2 | 10 / 30 | " \
           "two-level bootstrap, seed variance pooled across the table" in out
    code, out, err = run_cli("results", root, "--table", "paper", "--interval", "t",
                             "--format", "markdown")
    assert code == 0, err
    assert "| cnnx | covid19 | 0.950 [0.315, 1.000] | 0.833 [0.410, 1.000] | 2 | 10 / 30 | " \
           "t over seeds |" in out
    code, out, _ = run_cli("results", root, "--table", "runs", "--format", "json")
    rows = json.loads(out)
    assert sorted(r["trial_id"] for r in rows) == ["cnnx-seed0", "cnnx-seed1",
                                                   "resnet18-seed0", "resnet18-seed1"]
    code, out, _ = run_cli("results", root, "--table", "metrics", "--format", "csv")
    assert out.splitlines()[0] == "sweep,trial_id,split,source,class,metric,value,ci_low,ci_high"
    assert len(out.splitlines()) == 1 + 96
    code, out, _ = run_cli("results", root, "--table", "paper", "--interval", "t")
    assert "0.950 [0.315, 1.000]" in out
    code, _, err = run_cli("results", root, "--sweep", "nope")
    assert code == 2 and err.count("\n") == 1 and "no sweep 'nope'" in err and "s2" in err
