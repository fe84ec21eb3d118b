"""What a crash or a full disk may have cut short in a sweep's folder, checked when a sweep
resumes, before anything trains.

Every file a sweep writes, and what ``--resume`` does when one is cut short (half written, or
empty). It completes, rebuilding what it can from the per-trial files, or it names the damaged
file in one line and exits 2; never a traceback.

- ``spec.yaml``: rewritten when the claim's spec hash matches (:mod:`raybench.tune.claim`).
- ``_claim.json``: taken over when ``spec.yaml`` matches the spec. Both damaged: one line, exit 2.
- ``_lease/<generation>.json``: a stale lease, taken over (:class:`~raybench.tune.claim.Lease`).
- ``optuna/journal.log``: its cut-short last line is dropped
  (:func:`raybench.tune.studies.repair`); an empty journal starts the studies again, and a
  point asked again with the params of a completed run row is told from it.
- ``_tune/<sweep>/``: Tune's state, rebuilt on the recognised signs
  (:func:`raybench.tune.experiment.unreadable_tune_state`: ``tuner.pkl``, experiment state,
  the newest searcher and search-generator state).
- ``_compact/``: a cache; an unreadable snapshot is removed (:meth:`ResultStore.compact` writes
  it again at the end), an unreadable ``cams.json`` only means every CAM file is checked.
- ``<table>/<trial>.parquet`` and ``cams/<trial>.npz``: :func:`check_sweep` removes all the
  trial's result files and the trial runs again under its id.
- ``_state/<trial>.pt``: the trial trains again from epoch 1
  (:class:`raybench.engine.worker.TrialState`).

A study trial that finished but has no run row any more (its files were damaged, or removed) is
run again by the searcher (:meth:`raybench.tune.search.CellSearcher._reconcile`).
"""
from __future__ import annotations

import logging

from raybench.config import Spec
from raybench.store import ResultStore

log = logging.getLogger(__name__)


def check_sweep(spec: Spec, store: ResultStore) -> None:
    """Removes the result files of trials with a damaged (cut-short) result file, so that the
    resume runs those trials again."""
    for trial_id, uri in sorted(store.damaged_trial_files(spec.name).items()):
        log.warning("%s is damaged (cut short by a crash or a full disk?); removing trial %s's "
                    "result files, it runs again", uri, trial_id)
        store.delete_trial_results(spec.name, trial_id)
