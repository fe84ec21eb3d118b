"""The Bayesian verdict finding (raybench.findings.equivalence) on a planted practical
equivalence and a planted difference, with its probabilities recomputed from the per-seed
balanced accuracies by baycomp's Student posterior and signed-rank test."""
from __future__ import annotations

import numpy as np
import pytest
from baycomp import SignedRankTest
from baycomp.single import Posterior

from raybench.findings import findings
from raybench.results import load
from raybench.store import ResultStore
from tests.helpers.resultdata import write_trial

LABELS = ("normal", "pneumonia")
N = 200  # films per class: one film moves balanced accuracy by 1 / 400


def _write(root: str, sweep: str, correct: dict[str, dict[str, list[int]]]) -> None:
    """``correct[scenario][model]``: films right per class on each seed (both classes)."""
    store = ResultStore(root)
    for scenario, models in correct.items():
        for model, per_seed in models.items():
            for seed, right in enumerate(per_seed):
                write_trial(store, sweep, f"{scenario}-{model}-{seed}", model=model, seed=seed,
                            scenario=scenario, labels=LABELS, n=N,
                            correct={lab: right for lab in LABELS})


def _verdicts(root: str, sweep: str):
    found = findings(load(root, sweep), n_boot=50)
    return found[found["kind"] == "verdict"]


def test_planted_equivalence_is_stated_with_baycomps_probability(tmp_path) -> None:
    a, b = [160, 164, 158, 162, 161], [161, 163, 159, 162, 160]  # within 1 film per seed
    _write(str(tmp_path), "eq", {"sc": {"a": a, "b": b}})
    rows = _verdicts(str(tmp_path), "eq")
    assert len(rows) == 1
    row = rows.iloc[0]
    d = (np.array(b) - np.array(a)) / N  # balanced accuracy = right / N on both classes
    first, second = ("a", "b") if row["model"] == "a" else ("b", "a")
    d = d if first == "a" else -d
    ref = Posterior(d.mean(), d.var(ddof=1) / d.size, d.size - 1, rope=0.01).probs()
    assert f"{first} and {second} are practically equivalent (within 0.01): P = " \
           f"{ref[1]:.2f}" in row["finding"]
    assert row["value"] == pytest.approx(ref[1], abs=1e-9) and ref[1] > 0.9
    assert "Bayesian t-test over 5 seeds" in row["finding"]


def test_planted_difference_is_not_called_equivalent(tmp_path) -> None:
    a, b = [140, 144, 138, 142, 141], [160, 163, 159, 162, 160]  # b better by ~0.1
    _write(str(tmp_path), "diff", {"sc": {"a": a, "b": b}})
    row = _verdicts(str(tmp_path), "diff").iloc[0]
    assert "practically equivalent" not in row["finding"]
    assert "b is better than a by more than 0.01: P = 1.00" in row["finding"]
    assert row["value"] > 0.99


def test_several_scenarios_add_a_signed_rank_verdict_over_blocks(tmp_path) -> None:
    rng = np.random.default_rng(0)
    plan = {}
    for sc in ("s1", "s2", "s3"):
        a = rng.integers(150, 170, 4)
        plan[sc] = {"a": a.tolist(), "b": (a + rng.integers(-1, 2, 4)).tolist()}
    _write(str(tmp_path), "multi", plan)
    rows = _verdicts(str(tmp_path), "multi")
    assert len(rows) == 4  # one per scenario, one over the 12 blocks
    study = rows[rows["scenario"].isna()].iloc[0]
    assert "Bayesian signed-rank test over 12 scenario x seed blocks" in study["finding"]
    first = str(study["model"])
    x = np.concatenate([plan[sc][first] for sc in ("s1", "s2", "s3")]) / N
    y = np.concatenate([plan[sc]["b" if first == "a" else "a"] for sc in ("s1", "s2", "s3")]) / N
    ref = SignedRankTest.probs(x, y, rope=0.01, nsamples=20000, random_state=1)
    assert study["value"] == pytest.approx(max(ref), abs=0.02)  # two 20,000-draw estimates


def test_an_undecided_comparison_states_no_verdict(tmp_path) -> None:
    a, b = [150, 170, 140, 165, 155], [160, 150, 168, 142, 158]  # seeds disagree widely
    _write(str(tmp_path), "open", {"sc": {"a": a, "b": b}})
    row = _verdicts(str(tmp_path), "open").iloc[0]
    assert row["finding"].startswith("No Bayesian verdict between ")
    assert row["value"] < 0.9 and "none reaches 0.9" in row["finding"]
