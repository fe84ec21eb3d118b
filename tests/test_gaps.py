"""Source gaps paired within seeds (raybench.gaps): a planted gap that the seeds' disagreement
hides from the per-source intervals is found; a planted null gives no gap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers.comparedata import write_preds_trial
from raybench import gaps
from raybench.results import load
from raybench.store import ResultStore

PER_CLASS = 60  # films of each class on each source


def _scores(right: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Probabilities whose argmax is the label where ``right``, else the next class."""
    predicted = np.where(right, y, (y + 1) % 3)
    p = np.full((y.size, 3), 0.1)
    p[np.arange(y.size), predicted] = 0.8
    return p


def _write(root: Path, gap: float) -> None:
    """Two seeds of one model on hospA and hospB. covid19 films are called right at a rate
    set by the seed (0.9 or 0.5: a large seed effect shared by both sources), minus ``gap``
    on hospB; every other film is called right."""
    store = ResultStore(str(root))
    y = np.tile(np.repeat(np.arange(3), PER_CLASS), 2)
    sources = np.repeat(["hospA", "hospB"], 3 * PER_CLASS)
    covid = y == 2
    for seed, rate in ((0, 0.9), (1, 0.5)):
        right = np.ones(y.size, bool)
        for src, r in (("hospA", rate), ("hospB", rate - gap)):
            films = np.flatnonzero(covid & (sources == src))
            right[films[int(round(r * films.size)):]] = False  # exactly r of them right
        write_preds_trial(store, "g", f"m-{seed}", model="cnnx", seed=seed, y=y,
                          probs={"test": _scores(right, y)}, sources=list(sources),
                          patients=[f"{s}-{i}" for i, s in enumerate(sources)])


def test_a_planted_within_seed_gap_is_found_with_its_numbers(tmp_path: Path) -> None:
    _write(tmp_path, 0.25)
    res = load(str(tmp_path), "g")
    table = gaps.source_gaps(res, "sc", n_boot=400)
    row = table[(table["class"] == "covid19") & (table["metric"] == "sensitivity")].iloc[0]
    assert (row["source_a"], row["source_b"]) == ("hospA", "hospB")
    assert row["value_a"] == np.mean([0.9, 0.5]) and row["value_b"] == np.mean([0.65, 0.25])
    assert row["gap"] == -0.25 and row["ci_high"] < 0 and row["seeds"] == 2
    assert row["counts_a"] == "54/60, 30/60" and row["counts_b"] == "39/60, 15/60"
    found = gaps.significant_gaps(table)
    assert ("cnnx", "covid19", "sensitivity") in set(
        zip(found["model"], found["class"], found["metric"], strict=True))
    text = gaps.gap_sentence(row)
    assert "0.450 on hospB against 0.700 on hospA" in text and "gap +0.250 [+" in text
    assert "hospB 39/60, 15/60, hospA 54/60, 30/60" in text
    # the per-source intervals, each with the seeds' spread (0.9 vs 0.5), overlap
    paper = res.paper_table("sc", by_source=True, n_boot=400)
    a, b = paper.loc[("cnnx", "hospA", "covid19")], paper.loc[("cnnx", "hospB", "covid19")]
    assert b["sensitivity_high"] > a["sensitivity_low"]
    # and the finding reaches the findings table
    found_rows = res.findings(n_boot=200)
    gap_rows = found_rows[found_rows["kind"] == "source gap"]
    assert any("cnnx covid19 sensitivity: 0.450 on hospB" in t for t in gap_rows["finding"])


def test_a_planted_null_gives_no_gap(tmp_path: Path) -> None:
    _write(tmp_path, 0.0)
    res = load(str(tmp_path), "g")
    table = gaps.source_gaps(res, "sc", n_boot=400)
    assert len(table) == 6  # one pair of sources x 2 rates x 3 classes
    assert (table["gap"] == 0).all()
    assert gaps.significant_gaps(table).empty
    found = res.findings(n_boot=200)
    assert "source gap" not in set(found["kind"])


def test_one_source_gives_an_empty_table(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    y = np.repeat(np.arange(3), 20)
    write_preds_trial(store, "g", "m-0", model="cnnx", seed=0, y=y,
                      probs={"test": _scores(np.ones(y.size, bool), y)})
    table = gaps.source_gaps(load(str(tmp_path), "g"), "sc", n_boot=100)
    assert isinstance(table, pd.DataFrame) and table.empty
