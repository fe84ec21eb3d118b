"""Results-level comparisons: compare_models, --table significance, per-source tables, ranks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from raybench import bayes
from raybench.compare import rank_models
from raybench.errors import RaybenchError
from raybench.results import load
from raybench.stats import mean_interval
from tests.helpers.comparedata import probs_for, write_preds_trial
from raybench.store import ResultStore


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_identical_models_p_one_interval_covers_zero(tmp_path: Path, rng) -> None:
    store = ResultStore(str(tmp_path))
    y = rng.integers(0, 3, 120)
    p = probs_for(y, 1.0, rng)
    for model in ("cnnx", "xception"):
        write_preds_trial(store, "s", f"{model}-0", model=model, seed=0, y=y, probs={"test": p})
    table = load(str(tmp_path), "s").compare_models(n_boot=300)
    assert set(table["model"]) == {"xception"} and set(table["baseline"]) == {"cnnx"}
    assert (table["diff"] == 0).all() and (table["p"] == 1.0).all()
    assert (table["ci_low"] <= 0).all() and (table["ci_high"] >= 0).all()
    # 3 overall metrics + 3 per class (sensitivity, specificity, auc) for 3 classes.
    assert len(table) == 3 + 3 * 3 and set(table["resampled"]) == {"images"}
    assert table.set_index("metric").loc["accuracy", "test"] == "mcnemar"


def test_clearly_better_model_and_holm_across_models(tmp_path: Path, rng) -> None:
    store = ResultStore(str(tmp_path))
    y = rng.integers(0, 3, 200)
    skills = {"cnnx": 0.2, "resnet18": 3.0, "vgg16": 0.4}
    for model, skill in skills.items():
        write_preds_trial(store, "s", f"{model}-0", model=model, seed=0, y=y,
                          probs={"test": probs_for(y, skill, rng)})
    res = load(str(tmp_path), "s")
    table = res.compare_models("balanced_accuracy", baseline="cnnx", n_boot=1000)
    better = table.set_index("model").loc["resnet18"]
    assert better["diff"] > 0.3 and better["ci_low"] > 0 and better["p"] < 0.01
    assert better["p_holm"] < 0.01 and better["seeds"] == 1 and better["n_images"] == 200
    assert table["p_holm"].tolist() == pytest.approx(
        multipletests(table["p"], method="holm")[1].tolist())
    acc = res.compare_models("accuracy", baseline="cnnx").set_index("model")
    assert acc.loc["resnet18", "p"] < 1e-6 and acc.loc["resnet18", "test"] == "mcnemar"
    with pytest.raises(RaybenchError, match="baseline 'densenet201' is not a model"):
        res.compare_models(baseline="densenet201")
    with pytest.raises(RaybenchError, match="cannot compare metric"):
        res.compare_models("f1")


def test_patient_clusters_widen_the_interval(tmp_path: Path, rng) -> None:
    y_pat = rng.integers(0, 3, 40)
    rep = np.repeat(np.arange(40), 5)  # five images per patient, scored alike
    a, b = probs_for(y_pat, 0.5, rng)[rep], probs_for(y_pat, 1.5, rng)[rep]
    widths = {}
    for kind, patients in (("images", None), ("patients", [f"p{i}" for i in rep])):
        store = ResultStore(str(tmp_path / kind))
        for model, p in (("a", a), ("b", b)):
            write_preds_trial(store, "s", f"{model}-0", model=model, seed=0, y=y_pat[rep],
                              probs={"test": p}, patients=patients)
        row = load(str(tmp_path / kind), "s").compare_models("accuracy", n_boot=1000).iloc[0]
        assert row["resampled"] == kind
        widths[kind] = row["ci_high"] - row["ci_low"]
    assert widths["patients"] > 1.6 * widths["images"]


def test_several_seeds_give_per_seed_rows_and_an_across_seed_interval(tmp_path: Path, rng) -> None:
    store = ResultStore(str(tmp_path))
    y = rng.integers(0, 3, 90)
    for seed in (0, 1, 2):
        for model, skill in (("cnnx", 1.0), ("resnet18", 1.0 + 0.5 * seed)):
            write_preds_trial(store, "s", f"{model}-{seed}", model=model, seed=seed, y=y,
                              probs={"test": probs_for(y, skill, rng)})
    res = load(str(tmp_path), "s")
    per_seed = res.compare_models("balanced_accuracy", per_seed=True, n_boot=200)
    assert per_seed["seed"].tolist() == [0, 1, 2]
    t = res.compare_models("balanced_accuracy", n_boot=200, interval="t").iloc[0]
    mean, low, high = mean_interval(per_seed["diff"].tolist())
    assert (t["diff"], t["ci_low"], t["ci_high"]) == pytest.approx((mean, low, high))
    assert t["seeds"] == 3 and t["test"] == "t over seeds" and 0 <= t["p"] <= 1
    agg = res.compare_models("balanced_accuracy", n_boot=200).iloc[0]  # pooled two-level
    assert agg["diff"] == pytest.approx(mean) and agg["ci_low"] < mean < agg["ci_high"]
    assert agg["test"] == "two-level bootstrap, pooled seed variance"
    assert agg["resampled"] == "seeds x images" and agg["pooled_cells"] == 1
    assert agg["seeds"] == 3 and agg["n_images"] == 90 and 0 < agg["p"] <= 1
    assert agg["dof"] >= 2 and agg["prior_dof"] == 0  # one comparison: nothing to pool
    verdict = bayes.t_verdict(per_seed["diff"].tolist(), 0.01)  # Bayesian t over the seeds
    assert (agg["p_baseline_better"], agg["p_equivalent"], agg["p_better"]) == pytest.approx(
        (verdict.p_a, verdict.p_rope, verdict.p_b))
    wide = res.compare_models("balanced_accuracy", n_boot=200, rope=0.5).iloc[0]
    assert wide["p_equivalent"] > agg["p_equivalent"]
    raw = res.compare_models("balanced_accuracy", n_boot=200, interval="unpooled").iloc[0]
    assert raw["test"] == "two-level bootstrap" and raw["diff"] == pytest.approx(mean)
    assert raw["ci_low"] < mean < raw["ci_high"] and "pooled_cells" not in raw
    with pytest.raises(RaybenchError, match="interval 'z'"):
        res.compare_models(interval="z")


def test_validation_split_and_selection_on_validation(tmp_path: Path, rng) -> None:
    store = ResultStore(str(tmp_path))
    y = rng.integers(0, 3, 100)
    good, bad = probs_for(y, 3.0, rng), probs_for(y, 0.0, rng)
    # Two cnnx trials of one cell: the one good on validation represents it, bad on test.
    write_preds_trial(store, "s", "cnnx-a", model="cnnx", seed=0, y=y,
                      probs={"test": bad, "val": good})
    write_preds_trial(store, "s", "cnnx-b", model="cnnx", seed=0, y=y,
                      probs={"test": good, "val": bad})
    write_preds_trial(store, "s", "vgg16-a", model="vgg16", seed=0, y=y,
                      probs={"test": good, "val": good})
    res = load(str(tmp_path), "s")
    test = res.compare_models("accuracy", n_boot=200).iloc[0]
    assert test["baseline_value"] == pytest.approx((bad.argmax(1) == y).mean())  # cnnx-a
    val = res.compare_models("accuracy", split="val", n_boot=200).iloc[0]
    assert val["diff"] == 0.0 and val["p"] == 1.0
    board = res.leaderboard(split="val")
    assert len(board) == 3 and board["trial_id"].iloc[-1] == "cnnx-b"
    with pytest.raises(RaybenchError, match="no train predictions"):
        res.compare_models(split="train")


def test_shortcut_control_compares_roi_variants_of_one_model(tmp_path: Path, rng) -> None:
    store = ResultStore(str(tmp_path))
    y = rng.integers(0, 3, 150)
    for roi, skill in (("full", 3.0), ("outside_lungs", 0.0), ("lungs_only", 3.0)):
        write_preds_trial(store, "s", f"cnnx-{roi}", model="cnnx", seed=0, y=y, roi=roi,
                          probs={"test": probs_for(y, skill, rng)})
    table = load(str(tmp_path), "s").compare_models("balanced_accuracy", by="roi",
                                                    baseline="full", n_boot=500)
    rows = table.set_index("roi")
    assert list(table.columns[:3]) == ["scenario", "model", "roi"]
    assert rows.loc["outside_lungs", "diff"] < -0.3 and rows.loc["outside_lungs", "p"] < 0.01
    assert rows.loc["lungs_only", "ci_low"] < 0.1


def test_per_source_paper_table(tmp_path: Path, rng) -> None:
    store = ResultStore(str(tmp_path))
    y = np.tile(np.arange(3), 20)
    p = np.full((60, 3), 0.1)
    p[np.arange(60), y] = 0.8
    sources = np.where(np.arange(60) < 30, "kermany", "hannover")
    p[(sources == "hannover") & (y == 0)] = [0.1, 0.1, 0.8]  # normals of hannover -> covid19
    write_preds_trial(store, "s", "cnnx-0", model="cnnx", seed=0, y=y, probs={"test": p},
                      sources=sources.tolist())
    res = load(str(tmp_path), "s")
    table = res.paper_table(by_source=True)
    assert list(table.index.names) == ["model", "source", "class"]
    assert table.loc[("cnnx", "hannover", "normal"), "sensitivity"] == 0.0
    assert table.loc[("cnnx", "kermany", "normal"), "sensitivity"] == 1.0
    whole = res.paper_table()
    assert whole.loc[("cnnx", "normal"), "sensitivity"] == 0.5  # per-source rows left out
    assert len(res.leaderboard()) == 1


def test_rank_models_friedman_over_seed_blocks(tmp_path: Path, rng) -> None:
    store = ResultStore(str(tmp_path))
    y = rng.integers(0, 3, 80)
    for seed in range(4):
        for model, skill in (("a", 0.0), ("b", 1.0), ("c", 4.0)):
            write_preds_trial(store, "s", f"{model}-{seed}", model=model, seed=seed, y=y,
                              probs={"test": probs_for(y, skill, rng)})
    ranks = rank_models(load(str(tmp_path), "s"))
    assert ranks.models == ("a", "b", "c") and ranks.mean_ranks == (3.0, 2.0, 1.0)
    assert ranks.n_blocks == 4 and ranks.pvalue == pytest.approx(math.exp(-4), rel=1e-6)


def test_cli_significance_table(tmp_path: Path, rng, run_cli) -> None:
    store = ResultStore(str(tmp_path))
    y = rng.integers(0, 3, 60)
    for model, skill in (("cnnx", 1.0), ("xception", 2.0)):
        write_preds_trial(store, "s", f"{model}-0", model=model, seed=0, y=y,
                          probs={"test": probs_for(y, skill, rng)})
    code, out, err = run_cli("results", str(tmp_path), "--sweep", "s", "--table",
                             "significance", "--baseline", "cnnx", "--format", "csv")
    assert code == 0, err
    frame = pd.read_csv(__import__("io").StringIO(out))
    assert frame.columns[:4].tolist() == ["scenario", "roi", "model", "baseline"]
    assert len(frame) == 12 and set(frame["baseline"]) == {"cnnx"}
    code, _, err = run_cli("results", str(tmp_path), "--sweep", "s", "--table",
                           "significance", "--baseline", "nope")
    assert code == 2 and err.count("\n") == 1 and "baseline 'nope'" in err


def test_a_run_writes_val_and_test_predictions_with_patient_source_and_calibration(
        tmp_path: Path) -> None:
    from raybench.config import load_spec
    from raybench.engine.run import run_training

    spec = load_spec(None, [
        "name=tiny", f"results={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.synthetic.per_class=10", "data.synthetic.size=32", "model.name=cnnx",
        "model.image_size=32", "train.epochs=1", "train.batch_size=8", "train.device=cpu",
        "cam.enabled=false"])
    outcome = run_training(spec)
    store = ResultStore(spec.results)
    preds = store.read_table("tiny", "predictions")
    assert preds.groupby("split").size().to_dict() == {"test": len(outcome.data.test),
                                                      "val": len(outcome.data.val)}
    assert preds["patient_id"].notna().all() and set(preds["source"]) == {"synthetic"}
    runs = store.read_table("tiny", "runs")
    assert runs.loc[0, "roi"] == "full" and runs.loc[0, "test_sources"] == "synthetic"
    assert runs.loc[0, "test_from"] == "held-out split of synthetic data"
    m = store.read_table("tiny", "metrics").set_index(["split", "class", "metric"])["value"]
    assert m[("test", "all", "accuracy")] == outcome.result.test.metrics.accuracy
    test = preds[preds["split"] == "test"]
    probs = test[[f"p_{c}" for c in outcome.data.labels]].to_numpy()
    onehot = np.eye(len(outcome.data.labels))[[outcome.data.labels.index(v) for v in test["label"]]]
    assert m[("test", "all", "brier")] == pytest.approx(((probs - onehot) ** 2).sum(1).mean())
    assert 0 <= m[("val", "all", "ece")] <= 1 and ("val", "all", "balanced_accuracy") in m
