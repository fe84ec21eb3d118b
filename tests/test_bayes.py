"""The Bayesian verdict (raybench.bayes) against baycomp, and known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from baycomp import SignedRankTest
from baycomp.single import Posterior

from raybench import bayes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_t_verdict_is_baycomps_student_posterior(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = rng.normal(0.005, 0.01, 6)
    got = bayes.t_verdict(d, rope=0.01)
    ref = Posterior(d.mean(), d.var(ddof=1) / d.size, d.size - 1, rope=0.01).probs()
    assert (got.p_a, got.p_rope, got.p_b) == pytest.approx(ref, abs=1e-12)
    assert got.n == 6 and got.test == "Bayesian t-test"


@pytest.mark.parametrize("center", [-0.02, 0.0, 0.012])
def test_signed_rank_verdict_agrees_with_baycomp_within_monte_carlo_error(center: float) -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0.7, 0.9, 30)  # 3 scenarios x 10 seeds of model A
    y = x + center + rng.normal(0, 0.01, 30)
    got = bayes.signed_rank_verdict(y - x, rope=0.01, nsamples=20000, seed=4)
    ref = SignedRankTest.probs(x, y, rope=0.01, nsamples=20000, random_state=5)
    # two independent 20,000-draw estimates of each probability: sd <= 0.0035 each
    assert (got.p_a, got.p_rope, got.p_b) == pytest.approx(ref, abs=0.02)
    assert got.p_a + got.p_rope + got.p_b == pytest.approx(1.0)


def test_known_answers_equivalent_and_better() -> None:
    tiny = [0.002, -0.001, 0.0, 0.001, -0.002, 0.001, 0.0, -0.001, 0.002, -0.001]
    eq = bayes.t_verdict(tiny, rope=0.01)
    assert eq.p_rope > 0.999
    assert eq.sentence("cnnx", "resnet18", 0.01) == (
        f"cnnx and resnet18 are practically equivalent (within 0.01): P = {eq.p_rope:.2f}")
    better = bayes.t_verdict([0.05 + v for v in tiny], rope=0.01)
    assert better.p_b > 0.999
    assert better.sentence("cnnx", "resnet18").startswith("resnet18 is better than cnnx")
    assert bayes.signed_rank_verdict(tiny * 3, rope=0.01).p_rope > 0.95
    assert math.isnan(bayes.t_verdict([0.1]).p_rope)
    # a wider ROPE turns the same 0.05 lead into equivalence
    assert bayes.t_verdict([0.05 + v for v in tiny], rope=0.1).p_rope > 0.999


def test_verdict_sentences_read_a_comparison_table() -> None:
    table = pd.DataFrame({"metric": ["balanced_accuracy", "balanced_accuracy", "accuracy"],
                          "baseline": ["cnnx", "cnnx", "cnnx"],
                          "model": ["resnet18", "vgg16", "resnet18"], "seeds": [3, 1, 3],
                          "p_baseline_better": [0.05, np.nan, 0.1],
                          "p_equivalent": [0.91, np.nan, 0.8], "p_better": [0.04, np.nan, 0.1]})
    assert bayes.verdict_sentences(table) == [
        "cnnx and resnet18 are practically equivalent (within 0.01): P = 0.91"]
    assert bayes.verdict_sentences(table.drop(columns="p_equivalent")) == []
