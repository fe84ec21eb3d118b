"""Experiment tracking: every trial mirrored as an MLflow run (optional, ``raybench[tracking]``).

The results store stays the truth; MLflow is a mirror for people who browse sweeps there. Each
trial logs from its own process, after its results are written (so it works when trials run
on other nodes than the driver, as long as ``tracking.mlflow.tracking_uri`` is reachable from
them): tags (sweep, model, scenario, seed, trial id), the hyperparameters as params, the
per-epoch metrics with the epoch as step, the final test metrics, and as artifacts the resolved
spec plus the figures its caller draws (a trial's confusion matrix and CAM grid). The mirror
never draws: it sits below the report and takes figures from whoever owns them.

Failure policy: :func:`check_tracking` runs when a job starts and fails it in seconds (one
line, exit code 2) if the server is unreachable or rejects the credentials; afterwards a
tracking failure is a warning and never fails a trial, whose results are already written.

Credentials come from the environment of each process (MLflow reads ``MLFLOW_TRACKING_TOKEN``,
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` itself) or from files named by
``MLFLOW_TRACKING_TOKEN_FILE`` / ``MLFLOW_TRACKING_PASSWORD_FILE``; they never enter the spec,
the results or a log line (messages pass through :func:`redact`). ``mlflow`` is imported only
when tracking is on.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from raybench import schema as S
from raybench.deadline import call_with_deadline
from raybench.errors import RaybenchError
from raybench.storage import redact as _redact_storage

if TYPE_CHECKING:  # heavy imports only for type checkers
    from raybench.cam.export import CamExport
    from raybench.config import Spec
    from raybench.engine.loop import LoopResult

log = logging.getLogger(__name__)

#: ``figures(folder) -> paths``: draws a trial's figures into ``folder`` (see :func:`log_trial`).
Figures = Callable[[Path], list[Path]]

#: Secrets MLflow reads from the environment; ``<NAME>_FILE`` names a file holding one.
SECRET_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")
#: Tag keys of a mirrored run (``mlflow.runName`` is the trial id as well).
TAGS = {S.SWEEP: "raybench.sweep", S.MODEL: "raybench.model", S.SCENARIO: "raybench.scenario",
        S.SEED: "raybench.seed", S.TRIAL_ID: "raybench.trial_id", S.ROI: "raybench.roi"}
EPOCH_METRICS = (S.TRAIN_LOSS, S.VAL_LOSS, S.VAL_ACCURACY, S.VAL_BALANCED_ACCURACY,
                 S.VAL_MACRO_AUC, S.LR, S.SECONDS, S.TRAIN_IMAGES_PER_S)
# MLflow's HTTP client retries 7 times with exponential backoff by default (minutes against a
# dead server); a mirror should give up sooner. A user's own setting wins.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def enabled(spec: "Spec") -> bool:
    """Whether the spec mirrors its trials to MLflow."""
    return spec.tracking.mlflow.tracking_uri is not None


def redact(text: str) -> str:
    """``text`` without the values of MLflow (and AWS) secrets from the environment."""
    for name in (*SECRET_ENV, "MLFLOW_TRACKING_USERNAME"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _redact_storage(text)


def load_credentials() -> None:
    """Sets ``MLFLOW_TRACKING_TOKEN`` / ``_PASSWORD`` from ``<NAME>_FILE`` when only that is set.

    Raises:
        RaybenchError: A named file cannot be read (the message names the variable and the
            path, never the content).
    """
    for name in SECRET_ENV:
        path = os.environ.get(f"{name}_FILE")
        if not path or os.environ.get(name):
            continue
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RaybenchError(f"{name}_FILE={path}: cannot read it "
                                f"({exc.strerror or type(exc).__name__})") from None
        if not value:
            raise RaybenchError(f"{name}_FILE={path}: the file is empty")
        os.environ[name] = value


def _prepare_env() -> None:
    load_credentials()
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _client(spec: "Spec") -> Any:
    _prepare_env()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=spec.tracking.mlflow.tracking_uri)


def experiment_name(spec: "Spec") -> str:
    """The MLflow experiment of the spec's runs: ``tracking.mlflow.experiment`` or the sweep."""
    return spec.tracking.mlflow.experiment or spec.name


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when missing (concurrent trials may race)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another trial created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _check_health(uri: str, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http only)
            response.read(64)
    except urllib.error.HTTPError as exc:
        raise RaybenchError(f"MLflow tracking server {uri}: /health answered HTTP {exc.code}"
                            ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RaybenchError(redact(f"MLflow tracking server {uri} is unreachable ({reason}); "
                                   "check tracking.mlflow.tracking_uri")) from None


def check_tracking(spec: "Spec") -> None:
    """Fails fast when tracking is on and the server cannot be used; creates the experiment.

    Raises:
        RaybenchError: The server does not answer ``/health`` within
            ``tracking.mlflow.check_timeout_s`` seconds, answers with an error, or rejects
            the credentials (that step may take up to 3x the timeout, at least 15 s).
    """
    if not enabled(spec):
        return
    cfg = spec.tracking.mlflow
    uri = str(cfg.tracking_uri)
    if uri.startswith(("http://", "https://")):
        _check_health(uri, cfg.check_timeout_s)
    client = _client(spec)
    # The server answered; this step checks the credentials and only guards against a hang.
    # MLflow's first call also imports its REST store, seconds on a busy machine.
    try:
        call_with_deadline(lambda: experiment_id(client, experiment_name(spec)),
                           max(15.0, 3 * cfg.check_timeout_s), f"MLflow tracking server {uri}",
                           "raybench-tracking-check")
    except RaybenchError:
        raise
    except Exception as exc:
        raise RaybenchError(_describe(exc, uri)) from None
    log.info("tracking trials in MLflow experiment %r at %s", experiment_name(spec), uri)


def _describe(exc: BaseException, uri: str) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if any(code in text for code in ("401", "403", "Unauthorized", "PERMISSION_DENIED",
                                     "UNAUTHENTICATED")):
        return (f"MLflow tracking server {uri} rejected the credentials (check "
                "MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)")
    return redact(f"MLflow tracking server {uri}: {text[:300]}")


def log_trial(spec: "Spec", trial_id: str, row: dict[str, Any], result: "LoopResult",
              cams: Optional["CamExport"] = None, figures: Optional[Figures] = None
              ) -> Optional[str]:
    """Mirrors one finished trial as an MLflow run; a no-op when tracking is off.

    Called after the trial's results are written. ``figures(folder)`` draws the trial's
    figures into ``folder`` and returns their paths (the caller owns them; see
    :func:`raybench.engine.figures.trial_figures`); they are uploaded as artifacts. A retried
    trial replaces (deletes) its earlier run of the same sweep, so MLflow shows one run per
    trial. Never raises: a tracking failure is logged as a warning.

    Returns:
        The MLflow run id, or ``None`` (tracking off, or it failed).
    """
    if not enabled(spec):
        return None
    try:
        return _log_trial(spec, trial_id, row, result, cams, figures)
    except Exception as exc:  # a mirror must never fail a trial whose results are written
        log.warning("MLflow tracking of trial %s failed (its results are written): %s",
                    trial_id, _describe(exc, str(spec.tracking.mlflow.tracking_uri)))
        return None


def _log_trial(spec: "Spec", trial_id: str, row: dict[str, Any], result: "LoopResult",
               cams: Optional["CamExport"], figures: Optional[Figures]) -> str:
    client = _client(spec)
    exp = experiment_id(client, experiment_name(spec))
    for old in client.search_runs([exp], filter_string=(
            f"tags.`{TAGS[S.SWEEP]}` = '{spec.name}' and "
            f"tags.`{TAGS[S.TRIAL_ID]}` = '{trial_id}'")):
        client.delete_run(old.info.run_id)  # a retried trial replaces its run
    run = client.create_run(exp, run_name=trial_id, tags=run_tags(spec, trial_id, row))
    run_id = run.info.run_id
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v, step in epoch_metrics(result)]
    final = len(result.history)
    test = result.test
    assert test is not None  # a finished trial has its test evaluation
    rows = test.metrics.to_rows("test") + (cams.rows if cams else [])
    metrics += [Metric(k, v, now, final) for k, v in test_metrics(rows, row).items()]
    params = [Param(k, str(v)) for k, v in run_params(spec, row).items()]
    for start in range(0, len(metrics), 1000):  # MLflow's log_batch limit
        client.log_batch(run_id, metrics=metrics[start:start + 1000],
                         params=params if start == 0 else [])
    with tempfile.TemporaryDirectory(prefix="raybench-mlflow-") as folder:
        for path in _artifacts(Path(folder), spec, figures):
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED" if row.get(S.STATUS) == S.STATUS_COMPLETED else "FAILED")
    log.info("trial %s mirrored as MLflow run %s", trial_id, run_id)
    return run_id


def run_tags(spec: "Spec", trial_id: str, row: dict[str, Any]) -> dict[str, str]:
    """The run's tags: sweep, model, scenario, seed, trial id (and ROI when it is not full)."""
    tags = {TAGS[S.SWEEP]: spec.name, TAGS[S.MODEL]: str(row.get(S.MODEL, spec.model.name)),
            TAGS[S.SCENARIO]: str(row.get(S.SCENARIO, "")),
            TAGS[S.SEED]: str(row.get(S.SEED, spec.train.seed)), TAGS[S.TRIAL_ID]: trial_id,
            "raybench.results": redact(spec.results)}
    roi = row.get(S.ROI) or spec.data.roi
    if roi and roi != "full":
        tags[TAGS[S.ROI]] = str(roi)
    return tags


def run_params(spec: "Spec", row: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters (the runs table's columns) plus seed, weight decay and precision."""
    params = {h: row[h] for h in S.HYPERPARAMETERS if row.get(h) is not None}
    params.update(seed=row.get(S.SEED, spec.train.seed), weight_decay=spec.train.weight_decay,
                  precision=row.get(S.PRECISION, spec.train.precision),  # as resolved
                  num_workers=row.get(S.NUM_WORKERS, 1))
    return params


def epoch_metrics(result: "LoopResult") -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of every finite per-epoch number; the step is the epoch."""
    out = []
    for stats in result.history:
        for key in EPOCH_METRICS:
            value = float(getattr(stats, key))
            if math.isfinite(value):
                out.append((key, value, int(stats.epoch)))
    return out


def test_metrics(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, float]:
    """Final metrics: ``test_<metric>`` (class ``all``) or ``test_<metric>_<class>``, finite only."""
    out = {}
    for r in rows:
        if r.get(S.SPLIT, "test") != "test" or r.get(S.SOURCE) is not None:
            continue  # per-source rows would collide with the whole split's keys
        suffix = "" if r[S.CLASS] == "all" else f"_{r[S.CLASS]}"
        out[f"test_{r[S.METRIC]}{suffix}"] = float(r[S.VALUE])
    for key in (S.WALL_S, S.TRAIN_IMAGES_PER_S, S.EPOCHS_RUN):
        if row.get(key) is not None:
            out[key] = float(row[key])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _artifacts(folder: Path, spec: "Spec", figures: Optional[Figures]) -> list[Path]:
    from raybench.config import dump_yaml

    paths = [folder / "spec.yaml"]
    paths[0].write_text(dump_yaml(spec), encoding="utf-8")
    return paths + (figures(folder) if figures is not None else [])
