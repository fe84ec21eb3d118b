"""One Tune searcher for a whole sweep: an Optuna study per cell, asked and told directly.

:class:`CellSearcher` serves every cell of the sweep from one Tune experiment. Each
``suggest`` picks the cell that has budget left and the fewest trials in flight, asks that
cell's study for a point (the paper's defaults first) and returns the trial's
:class:`~raybench.trial.TrialConfig` as Tune's config. A study keeps at most
``sweep.max_concurrent_per_study`` trials in flight so TPE learns from finished ones while
other cells fill the cluster. ``paper`` mode uses the same searcher with one trial per cell
whose only point is the spec's own hyperparameters.

The studies live in an Optuna ``JournalStorage`` file (:mod:`raybench.tune.studies`), written
as trials are asked and told; the searcher's own state (which Tune trial is which study trial)
is saved with each experiment checkpoint. When a session starts, :meth:`CellSearcher._reconcile`
compares the studies with raybench's per-trial files: a study trial left running by a dead
driver is told from its completed run row, or asked again under the same number (so the rerun
keeps its trial id and replaces its own files). A trial that crashed (``FAIL`` with
``raybench_status=crashed``) is retried as a new study trial with the same params and the
user attribute ``raybench_retry_of`` (:data:`raybench.tune.studies.RETRY_OF`), under its own
trial id; a study's budget counts trial ids, not attempts. A trial that failed on its spec or
data (``raybench_status=error``) is final.
"""
from __future__ import annotations

import logging
import pickle
import warnings
from collections import Counter
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ray.tune.search import SearchGenerator, Searcher

from raybench import killpoint
from raybench import schema as S
from raybench.config import SearchSpace, Spec
from raybench.store import CorruptResultError, ResultStore
from raybench.tune import claim, studies
from raybench.trial import Cell, TrialConfig, cell_spec, searched_values
from raybench.tune.space import SPACES, first_point

log = logging.getLogger(__name__)


def startup_trials(num_samples: int) -> int:
    """TPE's random start-up trials for a study of ``num_samples``: ``max(2, num_samples // 4)``.

    Optuna's default (10) would make every study of 4-10 samples a random search; the paper's
    defaults (trial 0) count as one of them. From trial ``startup_trials`` on, TPE samples from
    its model of the finished trials.
    """
    return max(2, num_samples // 4)


@dataclass(frozen=True)
class FixedPoint:
    """Paper mode's "space": the spec's own hyperparameters as one-value choices."""

    spec: Spec

    def __call__(self, trial: Any) -> None:
        for key, value in searched_values(self.spec).items():
            trial.suggest_categorical(key, [value])


@dataclass(frozen=True)
class SweepPlan:
    """What the searcher serves: the sweep spec (absolute paths), its cells and budgets.

    ``batch_sizes`` holds, by cell name, the batch sizes the cell's training split can take
    (:mod:`raybench.tune.feasible`); a cell not in it searches ``sweep.space`` as it is.
    """

    spec: Spec
    cells: tuple[Cell, ...]
    batch_sizes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    gpu: Any = None  # the sweep's GpuPlan (scaling.gpus_per_worker: auto), else None

    def gpu_share(self, cell: Cell, params: Mapping[str, Any]) -> Optional[float]:
        """The GPU share per worker of a trial of ``cell`` with ``params`` (None: the spec's)."""
        from raybench.tune.packing import share_of

        cspec = cell_spec(self.spec, cell)
        return share_of(self.gpu, cspec, cell.model,
                        int(params.get(S.BATCH_SIZE, cspec.train.batch_size)))

    def space(self, cell: Cell) -> SearchSpace:
        """The cell's search space: ``sweep.space`` less the batches its data cannot take."""
        space = self.spec.sweep.space
        allowed = self.batch_sizes.get(cell.name)
        return dataclasses.replace(space, batch_sizes=allowed) if allowed else space

    @property
    def paper(self) -> bool:
        return self.spec.sweep.mode == "paper"

    @property
    def budget(self) -> int:
        """Trials per cell."""
        return 1 if self.paper else self.spec.sweep.num_samples

    @property
    def cap(self) -> int:
        """Trials of one study in flight at once."""
        return 1 if self.paper else self.spec.sweep.max_concurrent_per_study

    def trial_id(self, cell: Cell, number: int) -> str:
        """``<cell>`` in paper mode, ``<cell>-t<NNN>`` in optuna mode (README's names)."""
        return cell.name if self.paper else f"{cell.name}-t{number:03d}"


#: Sweeps whose crashed trials past ``sweep.max_retries`` this process retries once more
#: (``--resume --retry-crashed``); the searcher itself is restored from Tune's snapshot.
_RETRY_CRASHED: set[str] = set()


def retry_crashed(sweep: str, on: bool) -> None:
    """Whether this session of ``sweep`` retries crashed trials past their retry budget."""
    if on:
        _RETRY_CRASHED.add(sweep)
    else:
        _RETRY_CRASHED.discard(sweep)


class CellSearcher(Searcher):
    """A Tune ``Searcher`` holding one Optuna study (ask/tell) per cell of the sweep."""

    def __init__(self, plan: SweepPlan) -> None:
        sw = plan.spec.sweep
        super().__init__(metric=sw.metric, mode=sw.metric_mode)
        self.plan = plan
        self._live: dict[str, tuple[str, int]] = {}     # Tune trial id -> (cell, number)
        self._reruns: dict[str, list[int]] = {}
        self._retries: dict[str, list[tuple[int, dict[str, Any]]]] = {}  # (first number, params)
        self._firsts: dict[tuple[str, int], int] = {}   # a retry's (cell, number) -> first number
        self._asked: dict[str, int] = {}
        self._by_name = {c.name: c for c in plan.cells}
        self._flying: Counter[str] = Counter()           # cell -> trials in flight
        self._studies: dict[str, Any] = {}  # open studies only: finished ones are dropped
        self._handles: dict[tuple[str, int], Any] = {}
        self._storage: Any = None
        self._reconciled = False
        self._ended_here = 0  # trials ended in this session (the test kill points)

    # --- state ------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # Optuna objects hold file handles and locks: they are reopened from the journal.
        state = dict(self.__dict__)
        state.update(_studies={}, _handles={}, _storage=None, _reconciled=False, _ended_here=0)
        return state

    def save(self, checkpoint_path: str) -> None:
        """Tune's experiment checkpoint: the trial map, and the journal's upload (S3)."""
        self._check_lease()  # before Tune uploads the snapshot this save belongs to
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"live": self._live}, handle)
        studies.upload(self.plan.spec.results, self.plan.spec.name)

    def restore(self, checkpoint_path: str) -> None:
        """Restores the trial map of the trials in flight (errored trials are final)."""
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self._live = dict(state["live"])
        self._flying = Counter(cell for cell, _ in self._live.values())
        self._reconciled = False

    def set_search_properties(self, metric: Optional[str], mode: Optional[str],
                              config: dict, **spec: Any) -> bool:
        return True  # metric and mode come from the sweep spec

    # --- studies ----------------------------------------------------------------------
    def storage(self) -> Any:
        """The sweep's one Optuna ``JournalStorage``, shared by every cell's study.

        One storage replays the journal once and then reads only what was appended; a storage
        per study would replay the whole journal (every cell's trials) once per cell.
        """
        if self._storage is None:
            self._storage = studies.open_storage(
                studies.local_journal(self.plan.spec.results, self.plan.spec.name))
        return self._storage

    def _study(self, cell: Cell) -> Any:
        import optuna

        if cell.name not in self._studies:
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study created
            sw = self.plan.spec.sweep
            study = optuna.create_study(
                study_name=cell.name, storage=self.storage(), load_if_exists=True,
                direction="maximize" if sw.metric_mode == "max" else "minimize",
                sampler=optuna.samplers.TPESampler(
                    seed=cell.sampler_seed, n_startup_trials=startup_trials(sw.num_samples)))
            if not study.get_trials(deepcopy=False) and not self.plan.paper:
                study.enqueue_trial(first_point(self.plan.space(cell), cell.model))
            self._studies[cell.name] = study
        return self._studies[cell.name]

    def _space(self, cell: Cell) -> Any:
        if self.plan.paper:
            return FixedPoint(cell_spec(self.plan.spec, cell))
        return SPACES.get("paper_neighbourhood")(self.plan.space(cell), cell.model)

    def _handle(self, cell: Cell, number: int) -> Any:
        """The live ``optuna.Trial`` of a study trial (rebuilt after a restore)."""
        import optuna

        key = (cell.name, number)
        if key not in self._handles:
            study = self._study(cell)
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
            self._handles[key] = optuna.trial.Trial(study, frozen._trial_id)
        return self._handles[key]

    def _cell(self, name: str) -> Cell:
        return self._by_name[name]

    def _drop_if_done(self, cell: Cell) -> None:
        """A cell with nothing left to ask or tell leaves memory; its study stays in storage."""
        if self.left(cell) <= 0 and not self._flying[cell.name]:
            self._studies.pop(cell.name, None)
            for key in [k for k in self._handles if k[0] == cell.name]:
                del self._handles[key]

    # --- reconciling with raybench's files ----------------------------------------------
    def _reconcile(self) -> None:
        """Counts each study's trial ids; the latest attempt of each decides what is left:
        running and owned by no Tune trial -> told or rerun; crashed -> retried."""
        from optuna.trial import TrialState

        owned = set(self._live.values())
        stored = {s.study_name for s in self.storage().get_all_studies()}
        spec = self.plan.spec
        rows = {n.rsplit(".", 1)[0] for n in
                ResultStore(spec.results).file_names(spec.name, S.RUNS_TABLE, ".parquet")}
        self._resets: set[tuple[str, int]] = set()
        for cell in self.plan.cells:
            self._reruns[cell.name], self._retries[cell.name] = [], []
            if cell.name not in stored:  # not asked yet: its study is created when first picked
                self._asked[cell.name] = 0
                continue
            study_id = self.storage().get_study_id_from_name(cell.name)
            trials = self.storage().get_all_trials(study_id, deepcopy=False)
            latest = studies.latest_attempts(trials)
            self._asked[cell.name] = len(latest)
            for t in trials:
                if studies.RETRY_OF in t.user_attrs:
                    self._firsts[(cell.name, t.number)] = studies.first_number(t)
            for first, t in latest.items():
                if (cell.name, t.number) in owned:
                    continue
                if t.state == TrialState.RUNNING:
                    self._recover(cell, t.number)
                elif t.state == TrialState.WAITING:  # a retry queued by a driver that died
                    self._retries[cell.name].append((first, dict(t.params)))
                elif (t.state == TrialState.FAIL
                      and t.user_attrs.get(studies.STATUS_ATTR) == S.STATUS_CRASHED):
                    self._retry_crashed(cell, first, t, studies.crash_count(trials, first))
                elif self.plan.trial_id(cell, first) not in rows:
                    log.info("trial %s ended in an earlier session but has no run row (its "
                             "results were damaged or removed); running it again",
                             self.plan.trial_id(cell, first))
                    self._retries[cell.name].append((first, dict(t.params)))
        self._reconciled = True

    def _retry_crashed(self, cell: Cell, first: int, attempt: Any, crashes: int) -> None:
        """A trial that crashed is retried while its crashes are within ``sweep.max_retries``;
        past it, only with ``--retry-crashed`` (which starts its count again)."""
        trial_id, budget = self.plan.trial_id(cell, first), self.plan.spec.sweep.max_retries
        if crashes > budget and self.plan.spec.name not in _RETRY_CRASHED:
            log.info("trial %s crashed %d times, more than sweep.max_retries (%d): it stays "
                     "crashed (--resume --retry-crashed retries it)", trial_id, crashes, budget)
            return
        if crashes > budget:
            self._resets.add((cell.name, first))
        log.info("trial %s crashed in an earlier session (%d time(s); sweep.max_retries %d%s); "
                 "retrying it", trial_id, crashes, budget,
                 ", --retry-crashed" if crashes > budget else "")
        self._retries[cell.name].append((first, dict(attempt.params)))

    def _trial_id(self, cell: Cell, number: int) -> str:
        """The raybench trial id of study trial ``number`` (a retry's is its first attempt's)."""
        return self.plan.trial_id(cell, self._firsts.get((cell.name, number), number))

    def _recover(self, cell: Cell, number: int) -> None:
        trial_id = self._trial_id(cell, number)
        value = completed_value(self.plan.spec, trial_id)
        if value is not None:
            log.info("trial %s completed before the driver stopped; telling its study", trial_id)
            self._study(cell).tell(number, value)
        else:
            log.info("trial %s did not complete; running it again", trial_id)
            self._reruns[cell.name].append(number)

    # --- Tune's searcher API ------------------------------------------------------------
    def left(self, cell: Cell) -> int:
        """Trials of ``cell`` still to start."""
        return (self.plan.budget - self._asked.get(cell.name, 0)
                + len(self._reruns.get(cell.name, ())) + len(self._retries.get(cell.name, ())))

    @property
    def total(self) -> int:
        """Trials of the whole sweep."""
        return self.plan.budget * len(self.plan.cells)

    def _pick(self) -> Optional[Cell]:
        cap = self.plan.spec.scaling.max_concurrent_trials
        if cap and len(self._live) >= cap:
            return None  # the explicit cap, here rather than in Tune's ConcurrencyLimiter
        flying, best = self._flying, None
        for c in self.plan.cells:  # the first open cell with the fewest trials in flight
            if self.left(c) > 0 and flying[c.name] < self.plan.cap and (
                    best is None or flying[c.name] < flying[best.name]):
                best = c
                if not flying[c.name]:
                    break
        return best

    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:  # type: ignore[override]
        """The next trial: the open cell with the fewest trials in flight; FINISHED at the end."""
        self._check_lease()
        if not self._reconciled:
            self._reconcile()
        cell = self._pick()
        if cell is None:
            done = all(self.left(c) <= 0 for c in self.plan.cells)
            return Searcher.FINISHED if done else None  # type: ignore[return-value]
        study = self._study(cell)
        if self._reruns[cell.name]:
            number = self._reruns[cell.name].pop(0)
            params = next(t for t in study.get_trials(deepcopy=False) if t.number == number).params
            self._handle(cell, number).set_user_attr(studies.STATUS_ATTR, "running")
        else:
            if getattr(self, "_ended_here", 0):
                killpoint.kill_at("next_trial")
            number, params = self._ask(cell, study)
        first = self._firsts.get((cell.name, number), number)
        self._live[trial_id] = (cell.name, number)
        self._flying[cell.name] += 1
        trial = TrialConfig(cell_spec(self.plan.spec, cell), cell, self.plan.trial_id(cell, first),
                            params, first, self.plan.gpu_share(cell, params))
        return trial.to_ray()

    def _ask(self, cell: Cell, study: Any) -> tuple[int, dict[str, Any]]:
        """A new study trial: the cell's next crashed trial to retry (queued with its params),
        else the sampler's next point."""
        retries = self._retries[cell.name]
        if retries:
            first, params = retries[0]
            if not any(t.state.name == "WAITING" and studies.first_number(t) == first
                       for t in study.get_trials(deepcopy=False)):
                reset = (cell.name, first) in getattr(self, "_resets", ())
                study.enqueue_trial(params, user_attrs={studies.RETRY_OF: first, **(
                    {studies.BUDGET_RESET: True} if reset else {})})
        handle = study.ask()  # takes the oldest queued trial first
        self._space(cell)(handle)
        number, params = handle.number, dict(handle.params)
        self._handles[(cell.name, number)] = handle
        first = handle.user_attrs.get(studies.RETRY_OF)
        if first is None:
            self._asked[cell.name] = self._asked.get(cell.name, 0) + 1
            return number, params
        self._firsts[(cell.name, number)] = int(first)
        retries[:] = [r for r in retries if r[0] != int(first)]
        trial_id = self.plan.trial_id(cell, int(first))
        # Its crashed run row goes: the retry writes its own (its stored state stays, so it
        # continues from its last finished epoch).
        ResultStore(self.plan.spec.results).delete_trial_file(self.plan.spec.name,
                                                              S.RUNS_TABLE, trial_id)
        log.info("retrying trial %s (study trial %d)", trial_id, number)
        return number, params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Each epoch's metric becomes the study trial's intermediate value (dashboard curves)."""
        self._check_lease()
        entry = self._live.get(trial_id)
        value, step = result.get(self.metric), result.get(S.EPOCH)
        if entry is None or value is None or step is None or self._ended(*entry):
            return
        with warnings.catch_warnings():  # a resumed trial reports its last epoch again
            warnings.simplefilter("ignore")
            self._handle(self._cell(entry[0]), entry[1]).report(float(value), int(step))

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None,
                          error: bool = False) -> None:
        """Tells the trial's study: COMPLETE with its final value, PRUNED when ASHA stopped it
        (its last value stays in the intermediate values), FAIL when it errored."""
        from optuna.trial import TrialState

        self._check_lease()
        entry = self._live.pop(trial_id, None)
        if entry is None:
            return
        cell = self._cell(entry[0])
        self._flying[cell.name] -= 1
        self._ended_here = getattr(self, "_ended_here", 0) + 1
        if self._ended(*entry):
            # Told by a driver killed before its Tune snapshot saw the trial end: Tune restored
            # the trial, which found its run row and reported its last epoch again.
            log.info("trial %s was already told to its study", self._trial_id(cell, entry[1]))
        elif error:  # FAIL; error (its spec or data) is final, crashed is retried by --resume
            row = ResultStore(self.plan.spec.results).trial_row(
                self.plan.spec.name, S.RUNS_TABLE, self._trial_id(cell, entry[1]))
            status = (S.STATUS_ERROR if row and row.get(S.STATUS) == S.STATUS_ERROR
                      else S.STATUS_CRASHED)
            self._handle(cell, entry[1]).set_user_attr(studies.STATUS_ATTR, status)
            self._study(cell).tell(entry[1], state=TrialState.FAIL)
        else:
            self._tell(cell, entry[1], result or {})
        self._handles.pop(entry, None)
        self._drop_if_done(cell)
        killpoint.kill_at("trial_told")

    def _check_lease(self) -> None:
        """A driver that lost the sweep's lease stops before it writes the studies."""
        claim.check_held(self.plan.spec.name)

    def _ended(self, cell_name: str, number: int) -> bool:
        """Whether the study trial has finished (COMPLETE, PRUNED or FAIL) in the journal."""
        handle = self._handle(self._cell(cell_name), number)
        return bool(self.storage().get_trial(handle._trial_id).state.is_finished())

    def _tell(self, cell: Cell, number: int, result: dict) -> None:
        from optuna.trial import TrialState

        study, value = self._study(cell), result.get(self.metric)
        if value is None:  # a restored trial that had completed before reports nothing again
            value = completed_value(self.plan.spec, self._trial_id(cell, number))
            result = {**result, S.EPOCH: self.plan.spec.train.epochs}
        if value is None:
            study.tell(number, state=TrialState.FAIL)
        elif int(result.get(S.EPOCH, 0)) < self.plan.spec.train.epochs:
            study.tell(number, state=TrialState.PRUNED)  # stopped early by its cell's ASHA
        else:
            study.tell(number, float(value))


class CellSearch(SearchGenerator):
    """Tune's ``SearchGenerator`` around a :class:`CellSearcher`, except that a restored one
    is never finished by its snapshot.

    Tune saves the generator's "finished" flag with the experiment: a session whose searcher
    had nothing left to suggest (every trial ended, some crashed) would be restored finished,
    and ``--resume`` would never ask for the retries. The searcher decides again instead,
    after reconciling with the studies.
    """

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._finished = False


def completed_value(spec: Spec, trial_id: str) -> Optional[float]:
    """The final metric of a trial whose run row says completed, else None."""
    store = ResultStore(spec.results)
    if not (store.has_trial_file(spec.name, S.RUNS_TABLE, trial_id)
            and store.has_trial_file(spec.name, S.EPOCHS_TABLE, trial_id)):
        return None
    try:
        status = (store.trial_rows(spec.name, S.RUNS_TABLE, trial_id) or [])[0][S.STATUS]
        rows = store.trial_rows(spec.name, S.EPOCHS_TABLE, trial_id) or []
    except (CorruptResultError, KeyError, IndexError) as exc:  # cut short by a crash
        log.warning("trial %s: its result files are unreadable (%s); running it again",
                    trial_id, str(exc).split("; ")[0] if str(exc) else type(exc).__name__)
        return None
    if status != S.STATUS_COMPLETED:
        return None
    value = rows[-1].get(spec.sweep.metric) if rows else None
    return None if value is None else float(value)
