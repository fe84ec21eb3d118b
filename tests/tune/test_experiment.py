"""raybench.tune.experiment: Tune's snapshot files checked before a restore (an experiment
state and a searcher state that name different trials in flight are not restored together),
and when a trial's process serves the next trial."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from raybench import storage
from raybench.config import load_spec
from raybench.errors import RaybenchError
from raybench.tune.experiment import disagreeing_tune_state, plan_of, reuses_actors, tune_config
from raybench.tune.search import CellSearcher


def _snapshot(folder: Path, statuses: dict[str, str], live: dict[str, tuple[str, int]],
              searcher: bytes | None = None) -> None:
    trials = [[json.dumps({"trial_id": tid, "status": status}), "{}"]
              for tid, status in statuses.items()]
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": trials}))
    (folder / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(
        searcher if searcher is not None else pickle.dumps({"live": live}))


def test_a_searcher_state_that_disagrees_with_tunes_trials_is_not_restored(tmp_path: Path) -> None:
    loc = storage.resolve(str(tmp_path))
    assert disagreeing_tune_state(loc) is None  # nothing there: the caller's other checks
    _snapshot(tmp_path, {}, {})  # every trial had ended: Tune cannot restore it
    assert disagreeing_tune_state(loc) == "it holds no trial (every trial had ended)"
    _snapshot(tmp_path, {"a": "RUNNING", "b": "TERMINATED", "c": "PENDING"},
              {"a": ("cell", 0), "c": ("cell", 2)})
    assert disagreeing_tune_state(loc) is None
    # The searcher's file is a snapshot older than Tune's: it does not know trial c.
    _snapshot(tmp_path, {"a": "RUNNING", "c": "PENDING"}, {"a": ("cell", 0)})
    assert disagreeing_tune_state(loc) == (
        "Tune's trials in flight (2) and its searcher's (1) differ: a driver killed between "
        "writing the two")
    _snapshot(tmp_path, {"a": "RUNNING"}, {}, searcher=pickle.dumps({"live": Path("x")}))  # a class: refused
    assert disagreeing_tune_state(loc) == "its searcher state is not CellSearcher's (UnpicklingError)"


@pytest.mark.parametrize(("sets", "local", "remote"), [
    ([], True, False),  # auto: the local Ray only
    (["scaling.reuse_actors=true"], True, True),
    (["scaling.reuse_actors=false"], False, False),
    (["scaling.reuse_actors=true", "scaling.num_workers=2"], False, False),  # a worker group
    (["scaling.reuse_actors=true", "scaling.in_process=false"], False, False),
])
def test_a_trials_process_serves_the_next_as_scaling_reuse_actors_says(
        sets: list[str], local: bool, remote: bool) -> None:
    spec = load_spec(None, sets)
    assert (reuses_actors(spec, remote=False), reuses_actors(spec, remote=True)) == (local, remote)
    assert tune_config(spec, CellSearcher(plan_of(spec)), remote=True).reuse_actors is remote


def test_reuse_actors_takes_auto_true_or_false() -> None:
    with pytest.raises(RaybenchError, match="scaling.reuse_actors must be bool or auto, got 'often'"):
        load_spec(None, ["scaling.reuse_actors=often"])
