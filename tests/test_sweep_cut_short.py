"""Every file a sweep writes, cut short (half its length, or empty) as a crash or a full disk
leaves it, then ``raybench sweep --resume``: it completes with every trial's results whole, or
names the damaged file in one line with exit 2; never a traceback (issue 23, item 8).

One finished sweep (optuna mode, one cell, two trials) is copied for each case to the same
path (the spec, and so the claim's hash, names the results root).
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import optuna
import pytest
import torch

from raybench.store import ResultStore
from raybench.tune import studies

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]
SWEEP = "cut"
SETS = ["name=cut", "sweep.models=[cnnx]", "sweep.seeds=[0]", "sweep.num_samples=2",
        "train.epochs=2", "sweep.progress_interval_s=60"]
T0, T1 = "cnnx-synthetic-s0-t000", "cnnx-synthetic-s0-t001"
#: One file of each kind the sweep writes (a glob under the sweep's folder), cut to half its
#: length or to nothing; a reader that tells the two apart meets both.
CASES = [
    ("spec.yaml", "half"), ("spec.yaml", "empty"), ("_claim.json", "half"),
    ("_lease/*.json", "empty"), ("optuna/journal.log", "half"), ("optuna/journal.log", "empty"),
    (f"_tune/{SWEEP}/tuner.pkl", "half"), (f"_tune/{SWEEP}/experiment_state-*.json", "empty"),
    (f"_tune/{SWEEP}/searcher-state-*.pkl", "half"),
    (f"_tune/{SWEEP}/search_gen_state-*.json", "empty"),
    (f"_tune/{SWEEP}/{T1}_*/result.json", "half"), ("_compact/runs.parquet", "half"),
    ("_compact/cams.json", "empty"), (f"runs/{T0}.parquet", "half"),
    (f"predictions/{T0}.parquet", "empty"), (f"cams/{T0}.npz", "half"),
    (f"_state/{T1}.pt", "half"),
]
# metrics/ and epochs/ trial files take the same path as runs/ and predictions/ (a Parquet
# footer that does not read back); each rerun case costs a trial's process start (~8 s).


def _args(root: Path, cache: Path) -> list[str]:
    out = ["sweep", "--config", str(REPO / "jobs" / "smoke.yaml"), "--results", str(root)]
    for item in [*SETS, f"data.cache_dir={cache}"]:
        out += ["--set", item]
    return out


@pytest.fixture(scope="module")
def finished(local_ray, tmp_path_factory):
    """(root the cases run at, a pristine copy of the finished sweep, the decoded cache)."""
    from raybench.cli import main

    base = tmp_path_factory.mktemp("cut")
    root, pristine, cache = base / "r", base / "pristine", base / "cache"
    assert main(_args(root, cache)) == 0
    shutil.copytree(root, pristine)
    return root, pristine, cache


def _cut(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "half" else b"")


def _in_flight_state(sweep: Path) -> Path:
    """T1 as a driver crash left it mid-training: no results yet, only its own checkpoint."""
    ResultStore(str(sweep.parent)).delete_trial_results(SWEEP, T1)
    buffer = io.BytesIO()
    torch.save({"model_state": {"w": torch.zeros(64, 64)}, "optimizer": {}, "epoch": 1,
                "history": [{"epoch": 1}]}, buffer)
    state = sweep / "_state" / f"{T1}.pt"
    state.parent.mkdir(exist_ok=True)
    state.write_bytes(buffer.getvalue())
    return state


@pytest.mark.parametrize("pattern,how", CASES)
def test_a_cut_short_sweep_file_then_resume(finished, pattern: str, how: str, capfd,
                                            caplog) -> None:
    import logging

    from raybench.cli import main

    root, pristine, cache = finished
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(pristine, root)
    sweep = root / SWEEP
    if pattern.startswith("_state/"):
        target = _in_flight_state(sweep)
    else:
        found = sorted(sweep.glob(pattern))
        assert found, f"the finished sweep has no {pattern}"
        target = found[-1]
    _cut(target, how)
    capfd.readouterr()
    caplog.set_level(logging.INFO, logger="raybench")
    code = main([*_args(root, cache), "--resume"])
    out, err = capfd.readouterr()
    said = out + err + caplog.text
    assert "is unreadable" not in said or pattern.startswith("_tune/"), said[-3000:]
    assert "Traceback" not in said, said[-4000:]
    assert "Failed to restore the run state" not in said, said[-4000:]  # Tune's silent skip
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench: error:")]
    assert code == 0 and not lines, (code, lines, said[-3000:])

    store = ResultStore(str(root))
    runs = store.read_table(SWEEP, "runs").sort_values("trial_id")
    assert runs["trial_id"].tolist() == [T0, T1]
    assert runs["status"].tolist() == ["completed", "completed"]
    for table in ("metrics", "epochs", "predictions"):
        frame = store.read_table(SWEEP, table)
        assert set(frame["trial_id"]) == {T0, T1}, table
    preds = store.read_table(SWEEP, "predictions")
    assert not preds.duplicated(["trial_id", "split", "image_id"]).any()
    for trial in (T0, T1):
        assert len(store.read_cams(SWEEP, trial).cams) > 0
    # The studies match the runs table: each trial id's latest attempt is COMPLETE.
    storage = studies.open_storage(sweep / "optuna" / "journal.log")
    trials = optuna.load_study(study_name="cnnx-synthetic-s0", storage=storage).trials
    latest = studies.latest_attempts(trials)
    assert sorted(latest) == [0, 1] and all(t.state.name == "COMPLETE" for t in latest.values())
    if pattern.startswith(("runs/", "metrics/", "epochs/", "predictions/", "cams/")):
        assert f"{target} is damaged" in said  # named, and the trial ran again
    if pattern.startswith("_state/"):  # a readable state would have started it at epoch 2
        epochs = store.read_table(SWEEP, "epochs")
        assert sorted(epochs.loc[epochs["trial_id"] == T1, "epoch"]) == [1, 2]
