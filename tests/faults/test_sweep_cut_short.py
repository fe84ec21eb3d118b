"""Every file a sweep writes, cut short (half its length, or empty) as a crash or a full disk
leaves it, then ``raybench sweep --resume``: it completes with every trial's results whole, or
names the damaged file in one line with exit 2; never a traceback (issue 23, item 8).

One finished sweep (optuna mode, one cell, two trials) is copied for each resume to the same
path (the spec, and so the claim's hash, names the results root). Damages that do not depend on
each other share one resume: three resumes cover every kind of file. ``spec.yaml`` and
``_claim.json`` are test_lease.py's (taken over or rewritten before anything resumes); the
damaged-file detection on its own, without Ray, is tune/test_damage.py's; and which Tune file
is a recognised sign of unreadable state is checked below on the real files, without a resume.
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

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]
SWEEP = "cut"
SETS = ["name=cut", "sweep.models=[cnnx]", "sweep.seeds=[0]", "sweep.num_samples=2",
        "train.epochs=2", "sweep.progress_interval_s=60"]
T0, T1 = "cnnx-synthetic-s0-t000", "cnnx-synthetic-s0-t001"
TUNE = f"_tune/{SWEEP}"
#: Per resume, files of different kinds (a glob under the sweep's folder) cut to half their
#: length or to nothing. metrics/ and epochs/ trial files take the same path as runs/ and
#: predictions/ (a Parquet footer that does not read back).
GROUPS = {
    # Tune restores its state with one trial's result.json cut; T0 and T1 rerun (named); the
    # snapshot and the CAM index are rebuilt; the stale lease is taken over; the journal's cut
    # last line is dropped.
    "trial-files": [(f"runs/{T0}.parquet", "half"), (f"cams/{T1}.npz", "half"),
                    ("_compact/runs.parquet", "half"), ("_compact/cams.json", "empty"),
                    ("_lease/*.json", "empty"), ("optuna/journal.log", "half"),
                    (f"{TUNE}/{T1}_*/result.json", "half")],
    # T1 was in flight (its checkpoint cut short: epoch 1 again), T0's predictions are gone,
    # and the searcher's state that Tune would skip silently is cut: Tune's state is rebuilt.
    "in-flight": [(f"_state/{T1}.pt", "half"), (f"predictions/{T0}.parquet", "empty"),
                  (f"{TUNE}/searcher-state-*.pkl", "half")],
    # All of Tune's state and the studies' journal: rebuilt from the run rows, nothing reruns.
    "tune-state": [(f"{TUNE}/tuner.pkl", "half"), (f"{TUNE}/experiment_state-*.json", "empty"),
                   (f"{TUNE}/search_gen_state-*.json", "empty"), ("optuna/journal.log", "empty")],
}
#: Tune's files and the sign each gives when cut (raybench.tune.experiment.unreadable_tune_state).
TUNE_SIGNS = [("tuner.pkl", "half", "{name} is cut short"),
              ("experiment_state-*.json", "half", "{name} is not valid JSON"),
              ("experiment_state-*.json", "empty", "{name} is empty"),
              ("searcher-state-*.pkl", "half", "{name} is cut short"),
              ("search_gen_state-*.json", "empty", "{name} is empty")]


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


def _damage(sweep: Path, pattern: str, how: str) -> Path:
    if pattern.startswith("_state/"):
        target = _in_flight_state(sweep)
    else:
        found = sorted(sweep.glob(pattern))
        assert found, f"the finished sweep has no {pattern}"
        target = found[-1]
    _cut(target, how)
    return target


def _pristine_copy(finished) -> Path:
    root, pristine, _ = finished
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(pristine, root)
    return root / SWEEP


@pytest.mark.parametrize("pattern,how,sign", TUNE_SIGNS)
def test_each_cut_short_tune_file_is_a_recognised_sign(finished, pattern: str, how: str,
                                                       sign: str) -> None:
    from raybench import storage
    from raybench.tune.experiment import unreadable_tune_state

    sweep = _pristine_copy(finished)
    loc = storage.resolve(sweep / TUNE)
    assert unreadable_tune_state(loc) is None
    target = _damage(sweep, f"{TUNE}/{pattern}", how)
    assert unreadable_tune_state(loc) == sign.format(name=target.name)


@pytest.mark.parametrize("group", list(GROUPS))
def test_cut_short_sweep_files_then_resume(finished, group: str, capfd, caplog) -> None:
    import logging

    from raybench.cli import main

    root, _, cache = finished
    sweep = _pristine_copy(finished)
    targets = {pattern: _damage(sweep, pattern, how) for pattern, how in GROUPS[group]}
    capfd.readouterr()
    caplog.set_level(logging.INFO, logger="raybench")
    code = main([*_args(root, cache), "--resume"])
    out, err = capfd.readouterr()
    said = out + err + caplog.text
    assert "is unreadable" not in said or any(p.startswith("_tune/") for p in targets), said[-3000:]
    assert "Traceback" not in said, said[-4000:]
    assert "Failed to restore the run state" not in said, said[-4000:]  # Tune's silent skip
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench: error:")]
    assert code == 0 and not lines, (code, lines, said[-3000:])
    _assert_whole(root, sweep)
    for pattern, target in targets.items():
        if pattern.startswith(("runs/", "metrics/", "epochs/", "predictions/", "cams/")):
            assert f"{target} is damaged" in said, pattern  # named, and the trial ran again
        if pattern.startswith("_state/"):  # a readable state would have started it at epoch 2
            epochs = ResultStore(str(root)).read_table(SWEEP, "epochs")
            assert sorted(epochs.loc[epochs["trial_id"] == T1, "epoch"]) == [1, 2]


def _assert_whole(root: Path, sweep: Path) -> None:
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
