"""The sweep engine's parts without a Ray cluster: trial identity, the cell searcher, per-cell
ASHA, the summary line, the sweep-name claim, the timeline and its Gantt figure."""
from __future__ import annotations

import re
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest

from raybench.config import load_spec
from raybench.store import ResultStore
from raybench.tune import studies
from raybench.trial import TrialConfig, apply_params, cells

REPO = Path(__file__).resolve().parents[2]


def _spec(tmp_path: Path, *sets: str):
    return load_spec(None, [f"results={tmp_path}", "name=unit", *sets])


def test_trial_config_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "sweep.rois=[full, lungs_only]", "sweep.models=[cnnx, resnet18]")
    names = [c.name for c in cells(spec)]
    assert names == ["cnnx-synthetic-s0-full", "cnnx-synthetic-s0-lungs_only",
                     "resnet18-synthetic-s0-full", "resnet18-synthetic-s0-lungs_only"]
    cell = cells(spec)[1]
    trial = TrialConfig(spec, cell, f"{cell.name}-t004", {"lr": 1e-3, "stride": 2}, 4)
    back = TrialConfig.from_ray(trial.to_ray())
    assert back == trial
    assert (back.trial_spec.train.lr, back.trial_spec.model.options["stride"]) == (1e-3, 2)
    assert back.spec.train.lr == 3e-4  # the cell's spec stays the base; params apply on top
    with pytest.raises(ValueError, match="unknown searched parameter 'learning_rate'"):
        apply_params(spec, {"learning_rate": 1e-3})
    bad = dict(trial.to_ray(), params={"lr": 1e-3, "batchsize": 8})
    with pytest.raises(ValueError, match="batchsize"):
        TrialConfig.from_ray(bad)


def _searcher(tmp_path: Path, *sets: str):
    from raybench.tune.search import CellSearcher
    from raybench.tune.experiment import plan_of

    spec = _spec(tmp_path, "sweep.mode=optuna", *sets)
    return CellSearcher(plan_of(spec)), spec


def test_searcher_spreads_cells_and_caps_each_study(tmp_path: Path) -> None:
    from ray.tune.search import Searcher

    searcher, spec = _searcher(tmp_path, "sweep.models=[cnnx, resnet18]", "sweep.seeds=[0, 1]",
                               "sweep.num_samples=3", "sweep.max_concurrent_per_study=2")
    got = [searcher.suggest(f"t{i}") for i in range(9)]
    ids = [g["trial_id"] for g in got[:8]]
    # Fewest in flight first: one trial of every cell before a second of any.
    assert [i.rsplit("-t", 1)[0] for i in ids[:4]] == [c.name for c in cells(spec)]
    assert all(i.endswith("-t000") for i in ids[:4]) and all(i.endswith("-t001") for i in ids[4:])
    assert got[8] is None  # every study has 2 in flight: wait, do not finish
    # The paper's defaults first in every study; second points differ between models.
    assert got[0]["params"] == {"lr": 3e-4, "batch_size": 15, "stride": 3}
    assert got[2]["params"] == {"lr": 3e-4, "batch_size": 15}  # resnet18: no stride
    assert got[4]["params"]["lr"] != got[6]["params"]["lr"]
    searcher.on_trial_result("t0", {"val_balanced_accuracy": 0.4, "epoch": 1})
    searcher.on_trial_complete("t0", {"val_balanced_accuracy": 0.5, "epoch": 20})
    third = searcher.suggest("t9")
    assert third["trial_id"] == "cnnx-synthetic-s0-t002"
    for i in (1, 2, 3, 4, 5, 6, 7, 9):
        searcher.on_trial_complete(f"t{i}", {"val_balanced_accuracy": 0.3, "epoch": 1})
    rest = [searcher.suggest(f"u{i}") for i in range(4)]
    assert sorted(r["trial_id"] for r in rest[:3]) == [
        "cnnx-synthetic-s1-t002", "resnet18-synthetic-s0-t002", "resnet18-synthetic-s1-t002"]
    assert rest[3] == Searcher.FINISHED
    storage = studies.open_storage(studies.local_journal(spec.results, spec.name))
    study = optuna.load_study(study_name="cnnx-synthetic-s0", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "PRUNED"]  # stopped at epoch 1 of 20
    assert study.trials[0].value == 0.5 and study.trials[0].intermediate_values == {1: 0.4}


def test_searcher_reconciles_a_dead_drivers_trials(tmp_path: Path) -> None:
    """Running study trials nobody owns: told from a completed run row, else asked again."""
    searcher, spec = _searcher(tmp_path, "sweep.num_samples=3", "train.epochs=2")
    first, second = searcher.suggest("a"), searcher.suggest("b")
    store = ResultStore(spec.results)
    trial_id = first["trial_id"]
    store.write_table("unit", "epochs", trial_id, [{"epoch": 2, "val_balanced_accuracy": 0.75}])
    store.write_table("unit", "runs", trial_id, [{"model": "cnnx", "scenario": "synthetic", "seed": 0,
                                                  "status": "completed"}])
    fresh, _ = _searcher(tmp_path, "sweep.num_samples=3", "train.epochs=2")  # no Tune state
    again = fresh.suggest("c")
    assert again["trial_id"] == second["trial_id"] and again["params"] == second["params"]
    new = fresh.suggest("d")
    assert new["trial_id"] == "cnnx-synthetic-s0-t002"
    study = fresh._study(fresh.plan.cells[0])
    assert study.trials[0].state.name == "COMPLETE" and study.trials[0].value == 0.75
    assert fresh.suggest("e") == "FINISHED"  # budget spent: Tune waits for the two in flight


def test_paper_mode_is_one_fixed_trial_per_cell(tmp_path: Path) -> None:
    from ray.tune.search import Searcher

    from raybench.tune.search import CellSearcher
    from raybench.tune.experiment import plan_of

    spec = _spec(tmp_path, "sweep.models=[cnnx, squeezenet]", "train.lr=1e-3")
    searcher = CellSearcher(plan_of(spec))
    got = [searcher.suggest(str(i)) for i in range(3)]
    assert [g["trial_id"] for g in got[:2]] == ["cnnx-synthetic-s0", "squeezenet-synthetic-s0"]
    assert got[0]["params"] == {"lr": 1e-3, "batch_size": 15, "stride": 3}
    assert got[2] == Searcher.FINISHED


def test_asha_compares_trials_of_the_same_cell_only() -> None:
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from raybench.tune.schedule import CellASHA

    sched = CellASHA(lambda: AsyncHyperBandScheduler(
        time_attr="training_iteration", metric="m", mode="max", max_t=4, grace_period=1,
        reduction_factor=2, stop_last_trials=False))

    def trial(tid: str, model: str):
        return SimpleNamespace(trial_id=tid, config={"cell": {"model": model,
                                                              "scenario": "s", "seed": 0}})

    good, bad_vgg, weak_cnnx = trial("a", "cnnx"), trial("b", "vgg16"), trial("c", "cnnx")
    for t in (good, bad_vgg, weak_cnnx):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, good, {"training_iteration": 1, "m": 0.9}) == "CONTINUE"
    # vgg16 is far worse than cnnx's 0.9 but is the first of its own cell: it continues.
    assert sched.on_trial_result(None, bad_vgg, {"training_iteration": 1, "m": 0.1}) == \
        TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, weak_cnnx, {"training_iteration": 1, "m": 0.2}) == \
        TrialScheduler.STOP
    assert sorted(sched.cells) == ["cnnx-s-s0", "vgg16-s-s0"]


def test_summary_line_and_eta() -> None:
    from raybench.tune.progress import SweepCounts, exception_line, summary_line

    c = SweepCounts(total=10, done=4, running=2, pending=3, errored=1,
                    best={"a-s-s0": 0.5, "b-s-s0": 0.8}, durations=[60.0, 120.0])
    line = summary_line("demo", "val_balanced_accuracy", "max", c, 125.0)
    assert line == ("sweep demo | 4/10 done, 2 running, 3 pending, 1 errored | best "
                    "val_balanced_accuracy: b-s-s0 0.800, a-s-s0 0.500 | elapsed 2m05s, eta 3m45s")  # 90 s x 5 left / 2
    assert "\n" not in line
    text = ("\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1)\nTraceback (most recent call last):\n"
            '  File "x.py", line 3\nraybench.errors.DataError: batch size 99 > 12 images\n')
    assert exception_line(text) == "raybench.errors.DataError: batch size 99 > 12 images"


def test_claim_is_atomic_locally_and_on_s3(tmp_path: Path, s3_bucket: str) -> None:
    from raybench import storage

    for root in (str(tmp_path), f"s3://{s3_bucket}/p"):
        loc = storage.resolve(root).join("sweep", "_claim.json")
        wins: list[bool] = []
        threads = [threading.Thread(target=lambda i=i: wins.append(
            storage.create_exclusive(loc, f"driver {i}".encode()))) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False] * 5 + [True], root
        assert storage.read_bytes(loc).decode().startswith("driver ")


def test_claim_sweep_new_resume_overwrite(tmp_path: Path) -> None:
    from raybench.config import dump_yaml
    from raybench.errors import RaybenchError
    from raybench.tune.claim import claim_sweep

    spec, store = _spec(tmp_path), ResultStore(str(tmp_path))
    assert claim_sweep(store, spec, resume=True, overwrite=False) is False  # resume-or-start
    store.write_spec("unit", dump_yaml(spec))
    with pytest.raises(RaybenchError, match="already exists .*claimed by .* pid .*--resume"):
        claim_sweep(store, spec, resume=False, overwrite=False)
    assert claim_sweep(store, spec, resume=True, overwrite=False) is True  # takes it over
    other = _spec(tmp_path, "train.epochs=9")
    with pytest.raises(RaybenchError, match="started with another spec"):
        claim_sweep(store, other, resume=True, overwrite=False)
    assert claim_sweep(store, other, resume=False, overwrite=True) is False
    assert sorted(p.name for p in (tmp_path / "unit").iterdir()) == ["_claim.json"]


def _runs(store: ResultStore) -> None:
    t0 = pd.Timestamp("2026-01-01 10:00:00", tz="UTC")
    rows = [("a", "n1", 0, 10), ("b", "n1", 0, 10), ("c", "n1", 10, 20), ("d", "n2", 2, 12)]
    for trial, node, start, end in rows:
        store.write_table("tl", "runs", trial, [{
            "model": "cnnx" if trial < "c" else "resnet18", "scenario": "synthetic", "seed": 0,
            "status": "completed", "node": node,
            "accelerator": "cpu", "started_at": t0 + pd.Timedelta(seconds=start),
            "finished_at": t0 + pd.Timedelta(seconds=end)}])


def test_timeline_utilisation_and_gantt(tmp_path: Path) -> None:
    from raybench.report import gantt_figure
    from raybench.results import load

    store = ResultStore(str(tmp_path))
    _runs(store)
    res = load(str(tmp_path), "tl")
    tl = res.timeline()
    assert tl["trial_id"].tolist() == ["a", "b", "d", "c"]
    assert tl["slot"].tolist() == [0, 1, 0, 0] and tl["duration_s"].tolist() == [10.0] * 4
    assert str(tl["started_at"].dt.tz) == "UTC"
    # 40 trial-seconds over 3 lanes (2 on n1, 1 on n2) x a 20 s span.
    assert res.utilisation() == pytest.approx(40 / 60)
    assert res.utilisation(slots=4) == pytest.approx(0.5)
    fig = gantt_figure(tl, tmp_path / "g.png")
    assert fig.path.stat().st_size > 5000 and "3 slot(s); utilisation 0.67" in fig.caption


def test_sweep_bench_compares_equal_trials(tmp_path: Path) -> None:
    from raybench.bench import EXTRA_SECTIONS, sweep_bench_specs
    from raybench.tune.search import CellSearcher
    from raybench.tune.experiment import plan_of

    specs = sweep_bench_specs(tmp_path)
    assert "sweep" in EXTRA_SECTIONS
    trials = {}
    for name, spec in specs.items():
        searcher = CellSearcher(plan_of(spec))
        got = []
        while (s := searcher.suggest(str(len(got)))) not in (None, "FINISHED"):
            got.append(s)
            searcher.on_trial_complete(str(len(got) - 1), {"val_balanced_accuracy": 0.5,
                                                           "epoch": spec.train.epochs})
        trials[name] = got
    assert len(trials["optuna"]) == len(trials["grid"]) == 16
    points = {(round(t["params"]["lr"], 6), t["params"]["batch_size"], t["params"]["stride"])
              for ts in trials.values() for t in ts}
    assert points == {(3e-4, 8, 3)}  # every trial of both sweeps trains the same way


def test_restore_rebuilds_only_on_recognised_signs_else_propagates(tmp_path: Path, caplog) -> None:
    import logging
    import pickle

    from raybench.config import with_absolute_paths
    from raybench.errors import SweepError
    from raybench.tune.experiment import make_tuner, tune_location, unreadable_tune_state

    spec = with_absolute_paths(_spec(tmp_path))
    state = tmp_path / "unit" / "_tune" / "unit"
    state.mkdir(parents=True)
    loc = tune_location(spec).join("unit")
    assert unreadable_tune_state(loc) == "no tuner.pkl"
    (state / "tuner.pkl").write_bytes(pickle.dumps({"a": 1})[:-1])  # cut before its STOP
    assert unreadable_tune_state(loc) == "no experiment_state-*.json"
    (state / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [')
    assert unreadable_tune_state(loc) == "tuner.pkl is cut short"
    (state / "tuner.pkl").write_bytes(pickle.dumps([1, 2]))  # whole, but not a tuner's state
    assert unreadable_tune_state(loc) == ("experiment_state-2026-01-01_00-00-00.json is not "
                                          "valid JSON")
    caplog.set_level(logging.INFO, logger="raybench")
    make_tuner(spec, True, None)  # recognised: rebuilt, with the sign named
    assert ("unreadable (experiment_state-2026-01-01_00-00-00.json is not valid JSON); "
            "rebuilding") in caplog.text
    assert not (state / "experiment_state-2026-01-01_00-00-00.json").exists()
    assert (state / "tuner.pkl").read_bytes() != pickle.dumps([1, 2])  # the new Tuner's
    (state / "tuner.pkl").write_bytes(pickle.dumps([1, 2]))
    (state / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    with pytest.raises(SweepError, match=r"cannot restore Tune's state at .*unit/_tune/unit: "
                                         r"TypeError: pop expected"):
        make_tuner(spec, True, None)  # any other failure is a sweep error, nothing deleted
    assert (state / "tuner.pkl").read_bytes() == pickle.dumps([1, 2])


def test_trial_config_does_not_grow_with_the_cells(tmp_path: Path) -> None:
    import json

    from raybench.trial import cell_spec

    def config_size(n_seeds: int) -> tuple[int, dict]:
        spec = _spec(tmp_path, f"sweep.seeds=[{', '.join(str(i) for i in range(n_seeds))}]",
                     "sweep.models=[cnnx, resnet18]")
        cell = cells(spec)[-1]
        config = TrialConfig(cell_spec(spec, cell), cell, cell.name, {}, 0).to_ray()
        return len(json.dumps(config)), config

    small, _ = config_size(2)
    large, config = config_size(2000)
    assert config["spec"]["sweep"]["seeds"] == [1999]
    assert config["spec"]["sweep"]["models"] == ["resnet18"]
    assert large - small == 4 * 3  # "1999" for "1" in the cell, its name, train.seed, sweep.seeds
    assert TrialConfig.from_ray(config).trial_spec.train.seed == 1999


def test_tpe_learns_after_a_budget_sized_startup(tmp_path: Path) -> None:
    """In a 6-sample study trials 0-1 are the start-up (paper point, one random), trials 2-5
    come from TPE's model: they differ from what the same sampler draws in its random phase."""
    from raybench.tune.search import startup_trials

    assert [startup_trials(n) for n in (1, 4, 6, 10, 16, 40)] == [2, 2, 2, 2, 4, 10]
    searcher, spec = _searcher(tmp_path, "sweep.num_samples=6", "sweep.max_concurrent_per_study=1",
                               "train.epochs=1")
    cell = searcher.plan.cells[0]
    got = []
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        got.append(config["params"])
        lr = config["params"]["lr"]  # a smooth objective TPE can learn: best near lr = 1e-3
        searcher.on_trial_complete(f"t{i}", {"val_balanced_accuracy": -abs(np.log10(lr) + 3),
                                             "epoch": 1})
    assert searcher._study(cell).sampler._n_startup_trials == 2
    # The same seed with Optuna's default start-up (10): every trial random.
    random_phase = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
        seed=cell.sampler_seed))
    from raybench.tune.space import SPACES, first_point

    random_phase.enqueue_trial(first_point(spec.sweep.space, cell.model))
    drawn = []
    for _ in range(6):
        trial = random_phase.ask()
        SPACES.get("paper_neighbourhood")(spec.sweep.space, cell.model)(trial)
        drawn.append(dict(trial.params))
        random_phase.tell(trial, -abs(np.log10(trial.params["lr"]) + 3))
    assert got[:2] == drawn[:2]  # start-up: the paper point, then the same random draw
    assert all(got[i]["lr"] != drawn[i]["lr"] for i in range(2, 6))  # TPE's model from trial 2


def test_space_checked_against_each_cells_training_split(tmp_path: Path, caplog) -> None:
    import logging

    from raybench.errors import ConfigError
    from raybench.tune import feasible
    from raybench.tune.experiment import plan_of
    from raybench.tune.search import CellSearcher

    spec = _spec(tmp_path, "sweep.mode=optuna", "sweep.seeds=[0, 1]",
                 "sweep.space.batch_sizes=[8, 16, 32]")
    small, large = (c.name for c in cells(spec))
    caplog.set_level(logging.INFO, logger="raybench")
    allowed = feasible.batch_sizes(spec, {small: 20, large: 40})
    assert allowed == {small: (8, 16), large: (8, 16, 32)}
    assert f"32 left out of 1 cell(s) whose training split is smaller ({small}: 20)" in caplog.text
    with pytest.raises(ConfigError, match=rf"^sweep.space.batch_sizes=32 is larger than the "
                                          rf"training split of cell {small} \(20 images\); use "
                                          rf"at most 20$"):
        feasible.batch_sizes(spec, {small: 20, large: 30})
    with pytest.raises(ConfigError, match=rf"^sweep.space.batch_sizes=8 is larger .* cell {small} "
                                          r"\(5 images\)"):
        feasible.batch_sizes(spec, {small: 5, large: 40})  # nothing left for that cell
    paper = _spec(tmp_path, "sweep.seeds=[0, 1]", "train.batch_size=24")
    with pytest.raises(ConfigError, match=rf"^train.batch_size=24 is larger than the training "
                                          rf"split of cell {small} \(20 images\)"):
        feasible.batch_sizes(paper, {small: 20, large: 40})
    # The searcher serves each cell its own space: the small cell never gets 32.
    searcher = CellSearcher(plan_of(spec, allowed))
    served = [searcher.suggest(f"t{i}") for i in range(4)]
    for i in range(4):
        searcher.on_trial_complete(f"t{i}", {"val_balanced_accuracy": 0.5, "epoch": 20})
    served += [searcher.suggest(f"u{i}") for i in range(4)]
    by_cell = {}
    for config in served:
        by_cell.setdefault(config["cell"]["seed"], []).append(config["params"]["batch_size"])
    assert len(by_cell[0]) == len(by_cell[1]) == 4
    assert by_cell[0][0] == by_cell[1][0] == 8  # the paper's 15 is not in the space: its first
    assert set(by_cell[0]) <= {8, 16}
    # The real data: the smoke spec's synthetic split sizes, read without decoding.
    sizes = feasible.train_sizes(_spec(tmp_path, f"data.cache_dir={tmp_path / 'cache'}",
                                       "data.synthetic.per_class=12"))
    assert list(sizes.values()) == [sizes["cnnx-synthetic-s0"]] and 12 < sizes["cnnx-synthetic-s0"] < 36


def test_space_no_cell_can_take_is_exit_2_with_nothing_trained(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("sweep", "--config", str(REPO / "jobs" / "smoke.yaml"),
                           "--results", str(tmp_path / "r"), "--set", "name=big",
                           "--set", f"data.cache_dir={tmp_path / 'cache'}",
                           "--set", "sweep.space.batch_sizes=[8, 500]")
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert re.fullmatch(r"raybench: error: sweep.space.batch_sizes=500 is larger than the "
                        r"training split of cell cnnx-synthetic-s0 \(\d+ images\); use at most "
                        r"\d+", lines[0]), lines[0]
    assert not (tmp_path / "r" / "big").exists()  # no claim, no spec, no trial


def _error_row(spec, trial_id: str, status: str = "error") -> None:
    """A trial's run row: by default the one a trial that failed on its spec writes before it
    raises (engine.trial)."""
    ResultStore(spec.results).write_table(spec.name, "runs", trial_id, [
        {"model": "cnnx", "scenario": "synthetic", "seed": 0, "status": status,
         "error": "ConfigError: bad"}])


def test_errored_is_fail_pruned_keeps_its_value_and_resume_does_not_rerun(tmp_path: Path) -> None:
    searcher, spec = _searcher(tmp_path, "sweep.num_samples=3", "train.epochs=4")
    for i in range(2):
        searcher.suggest(f"t{i}")
    searcher.on_trial_result("t1", {"val_balanced_accuracy": 0.6, "epoch": 2})
    _error_row(spec, "cnnx-synthetic-s0-t000")
    searcher.on_trial_complete("t0", error=True)
    searcher.on_trial_complete("t1", {"val_balanced_accuracy": 0.6, "epoch": 2})  # ASHA stop
    _error_row(spec, "cnnx-synthetic-s0-t001", status="stopped")  # the ledger's row of it
    storage = studies.open_storage(studies.local_journal(spec.results, spec.name))
    study = optuna.load_study(study_name="cnnx-synthetic-s0", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "PRUNED"]
    assert study.trials[0].user_attrs["raybench_status"] == "error"
    assert study.trials[1].intermediate_values == {2: 0.6}
    fresh, _ = _searcher(tmp_path, "sweep.num_samples=3", "train.epochs=4")  # a resume
    nxt = fresh.suggest("r0")
    assert nxt["trial_id"] == "cnnx-synthetic-s0-t002"  # not t000 again: the error is final
    assert fresh.suggest("r1") == "FINISHED"


def test_default_space_is_trimmed_to_the_data_not_refused(tmp_path: Path, caplog) -> None:
    import logging

    from raybench.tune import feasible

    spec = _spec(tmp_path, "sweep.mode=optuna")  # batch sizes (8, 15, 16, 32, 64) by default
    caplog.set_level(logging.INFO, logger="raybench")
    assert feasible.batch_sizes(spec, {"cnnx-synthetic-s0": 32}) == {
        "cnnx-synthetic-s0": (8, 15, 16, 32)}
    assert "64 left out of 1 cell(s) whose training split is smaller" in caplog.text


def test_cut_short_journal_and_result_files_are_rebuilt_on_resume(tmp_path: Path) -> None:
    """A crash cut the journal's last line and a trial's run row: resume drops the half line
    (Optuna's next append would otherwise corrupt the journal) and reruns that trial."""
    searcher, spec = _searcher(tmp_path, "sweep.num_samples=2", "train.epochs=1")
    first, second = searcher.suggest("a"), searcher.suggest("b")
    path = studies.local_journal(spec.results, spec.name)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 5, "trial_id": 0, "param_na')  # cut mid-append
    store = ResultStore(spec.results)
    store.write_table("unit", "epochs", first["trial_id"], [{"epoch": 1, "val_balanced_accuracy": 0.5}])
    run = tmp_path / "unit" / "runs" / f"{first['trial_id']}.parquet"
    run.parent.mkdir(parents=True, exist_ok=True)
    run.write_bytes(b"PAR1 cut short")
    assert studies.repair(path) and path.read_bytes() == whole
    assert not studies.repair(path)
    fresh, _ = _searcher(tmp_path, "sweep.num_samples=2", "train.epochs=1")  # a resume
    again = [fresh.suggest("c")["trial_id"], fresh.suggest("d")["trial_id"]]
    assert again == [first["trial_id"], second["trial_id"]]  # both rerun under their ids
    fresh.on_trial_complete("c", {"val_balanced_accuracy": 0.7, "epoch": 1})
    study = optuna.load_study(study_name="cnnx-synthetic-s0", storage=studies.open_storage(path))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]


def test_a_completed_trial_restored_by_tune_reports_its_last_epoch_again(tmp_path: Path) -> None:
    """Tune restores a trial from a snapshot taken before its first report; the trial finds
    its run row and does not train, but must end with its metric (Tune refuses a trial that
    ends without it): it reports its last stored epoch."""
    import dataclasses

    import torch

    from raybench import schema as S
    from raybench.engine.loop import EpochStats
    from raybench.engine.worker import WorkerContext, run_worker
    from raybench.trial import searched_values

    spec = _spec(tmp_path, "train.epochs=2")
    cell = cells(spec)[0]
    trial = TrialConfig(spec, cell, cell.name, {}, 0)
    tspec, store = trial.trial_spec, ResultStore(str(tmp_path))
    epochs = [dataclasses.asdict(EpochStats(e, 1.0 / e, 0.9, 0.5, 0.25 * e, 0.6, 3e-4, 1.0, 10.0))
              for e in (1, 2)]
    store.write_table("unit", S.EPOCHS_TABLE, trial.trial_id, epochs)
    row = {S.MODEL: "cnnx", S.SCENARIO: cell.scenario, S.SEED: 0, **searched_values(tspec),
           S.EPOCHS: 2, S.EPOCHS_RUN: 2, S.STATUS: S.STATUS_COMPLETED}
    reported: list[dict] = []

    def ctx() -> WorkerContext:
        return WorkerContext(rank=0, world=1, device=torch.device("cpu"), report=reported.append,
                             checkpoint=None, checkpoint_cls=None, prepare_model=lambda m: m,
                             own_state=True)

    store.write_table("unit", "runs", trial.trial_id, [row])
    assert run_worker(trial, ctx()) is None
    assert reported == [{**epochs[1], S.MODEL: "cnnx", S.SCENARIO: cell.scenario,
                         "raybench_trial": trial.trial_id}]
    assert reported[0][S.VAL_BALANCED_ACCURACY] == 0.5


def test_a_crashed_trial_is_retried_under_its_own_id_and_counted_once(tmp_path: Path) -> None:
    """A trial that failed for a reason other than its spec or data (its node lost) is
    ``crashed``: exit 1 naming it, and ``--resume`` retries it under the same trial id as a
    new study trial with the same params; the study's budget counts trial ids."""
    from raybench.errors import SweepError
    from raybench.tune import outcome

    searcher, spec = _searcher(tmp_path, "sweep.num_samples=2", "train.epochs=4")
    first, second = searcher.suggest("t0"), searcher.suggest("t1")
    store = ResultStore(spec.results)
    row = outcome.trial_outcome(spec, store, first, RuntimeError("the node died"), {"epoch": 2})
    assert (row["status"], row["error"]) == ("crashed", "RuntimeError: the node died")
    run = store.trial_row("unit", "runs", first["trial_id"])
    assert (run["status"], run["epochs_run"]) == ("crashed", 2)
    searcher.on_trial_complete("t0", error=True)
    _error_row(spec, "cnnx-synthetic-s0-t001", status="completed")  # the worker's, at its end
    searcher.on_trial_complete("t1", {"val_balanced_accuracy": 0.6, "epoch": 4})
    assert outcome.unfinished_cells(spec) == ["cnnx-synthetic-s0"]
    assert outcome.unfinished_cells(spec, crashed_done=True) == []  # exit 1, not 130
    with pytest.raises(SweepError) as err:
        outcome.check_outcome([row], interrupted=False)
    assert str(err.value) == ("trial cnnx-synthetic-s0-t000 crashed: RuntimeError: the node "
                              "died; --resume retries it")

    fresh, _ = _searcher(tmp_path, "sweep.num_samples=2", "train.epochs=4")  # the resume
    retry = fresh.suggest("r0")
    assert (retry["trial_id"], retry["params"], retry["number"]) == (
        first["trial_id"], first["params"], 0)
    assert store.trial_row("unit", "runs", first["trial_id"]) is None  # the crash's row went
    assert fresh.suggest("r1") == "FINISHED"  # t001 completed: two trial ids, budget spent
    fresh.on_trial_result("r0", {"val_balanced_accuracy": 0.7, "epoch": 3})
    fresh.on_trial_complete("r0", {"val_balanced_accuracy": 0.7, "epoch": 4})
    storage = studies.open_storage(studies.local_journal(spec.results, spec.name))
    study = optuna.load_study(study_name="cnnx-synthetic-s0", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[0].user_attrs["raybench_status"] == "crashed"
    assert study.trials[2].user_attrs["raybench_retry_of"] == 0
    assert study.trials[2].params == study.trials[0].params and study.trials[2].value == 0.7
    assert outcome.unfinished_cells(spec) == []
    _error_row(spec, first["trial_id"], status="completed")
    again, _ = _searcher(tmp_path, "sweep.num_samples=2", "train.epochs=4")
    assert again.suggest("s0") == "FINISHED"  # the retry completed: nothing left
    # A trial that completed but whose results are gone (damaged, removed) runs again.
    ResultStore(spec.results).delete_trial_results(spec.name, "cnnx-synthetic-s0-t001")
    lost, _ = _searcher(tmp_path, "sweep.num_samples=2", "train.epochs=4")
    rerun = lost.suggest("u0")
    assert (rerun["trial_id"], rerun["params"]) == ("cnnx-synthetic-s0-t001", second["params"])
    assert lost.suggest("u1") == "FINISHED"


def test_a_retry_queued_by_a_driver_that_died_is_taken_not_queued_twice(tmp_path: Path) -> None:
    searcher, spec = _searcher(tmp_path, "sweep.num_samples=1", "sweep.seeds=[0]")
    first = searcher.suggest("t0")
    searcher.on_trial_complete("t0", error=True)  # no error row: crashed
    study = searcher._study(searcher.plan.cells[0])
    study.enqueue_trial(first["params"], user_attrs={"raybench_retry_of": 0})  # then it died
    fresh, _ = _searcher(tmp_path, "sweep.num_samples=1", "sweep.seeds=[0]")
    assert fresh.suggest("r0")["trial_id"] == first["trial_id"]
    assert fresh.suggest("r1") == "FINISHED"
    states = [t.state.name for t in fresh._study(fresh.plan.cells[0]).trials]
    assert states == ["FAIL", "RUNNING"]


def test_a_spec_or_data_error_is_final_whatever_ray_wraps_it_in(tmp_path: Path) -> None:
    """The trial writes its run row as ``error`` before it raises; the driver classifies a
    wrapped ConfigError / DataError as final without it too."""
    from raybench.engine.trial import run_trial
    from raybench.errors import ConfigError, DataError, final_error
    from raybench.tune import outcome
    from raybench.tune.experiment import plan_of
    from raybench.tune.search import CellSearcher

    spec = _spec(tmp_path, "train.batch_size=500", "train.epochs=1")
    config = CellSearcher(plan_of(spec)).suggest("t0")
    with pytest.raises(ConfigError, match="batch_size=500 is larger than the training split"):
        run_trial(config)
    store = ResultStore(spec.results)
    row = store.trial_row("unit", "runs", "cnnx-synthetic-s0")
    assert row["status"] == "error" and row["error"].startswith("ConfigError: train.batch_size=500")
    # Ray hands the driver a wrapper; the trial's own row says it is final.
    wrapper = RuntimeError("ray::run_trial() failed")
    summary = outcome.trial_outcome(spec, store, config, wrapper, {})
    assert summary["status"] == "error" and summary["error"] == row["error"]

    class TrainingFailed(Exception):  # Ray Train's shape: the workers' own exceptions
        def __init__(self, failures: dict) -> None:
            super().__init__("training failed")
            self.worker_failures = failures

    data = DataError("image x.png is not a PNG")
    assert final_error(TrainingFailed({0: RuntimeError("x"), 1: data})) is data
    chained = RuntimeError("wrapped")  # RayTaskError keeps the exception as .cause
    chained.cause = ConfigError("bad lr")  # type: ignore[attr-defined]
    assert isinstance(final_error(chained), ConfigError)
    try:
        try:
            raise DataError("manifest.csv: no label column")
        except DataError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        assert isinstance(final_error(outer), DataError)
    assert final_error(RuntimeError("out of memory")) is None
