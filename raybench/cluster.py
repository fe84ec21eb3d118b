"""Ray start-up, reachability, trial slots, and raybench's patches of Ray's behaviour.

Every patch below names the Ray behaviour it works around and the Ray version it was measured
with (2.60.0, the version ``pyproject.toml`` pins the floor of). Each patch leaves a Ray
without the patched mechanism alone, so a newer Ray that drops it only loses the patch.
Importing this module imports no Ray: the functions import it when called.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, Optional
from urllib.parse import urlparse

from raybench.config import Spec
from raybench.errors import RaybenchError, stop_now
from raybench.killpoint import CRASH_ENV, DRIVER_ENV, KILL_ENV
from raybench.lease import GENERATION_ENV

log = logging.getLogger(__name__)

#: Environment variable of the fault-injection hook (JSON ``{"epoch": N, "marker": path}``).
INJECT_ENV = "RAYBENCH_INJECT_FAILURE"

#: Ray Tune copies these into every trial's runtime_env, and Ray's runtime-env agent then logs
#: them in plain text. Trials get credentials from their own environment instead: the local
#: Ray inherits the driver's, cluster pods get them from Kubernetes secrets.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "AWS_SECURITY_TOKEN")


def stop_ray_copying_credentials() -> None:
    """Removes the AWS variables from the set Tune copies into trial runtime environments,
    and adds the fault-injection hook's and the kill points' variables (tests set them after
    the local Ray started; :mod:`raybench.killpoint`) and the driver's lease generation,
    which fences its trials' writes (:class:`raybench.lease.Fence`).

    Ray 2.60.0: ``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE`` lists the variables
    Tune copies from the driver into each trainable actor's ``runtime_env``; the AWS keys are
    in it, and the runtime-env agent logs the ``runtime_env`` it receives.
    """
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # a Ray without this mechanism copies nothing
        return
    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(CREDENTIAL_ENV)
    class_cache.ENV_VARS_TO_PROPAGATE.update((INJECT_ENV, KILL_ENV, DRIVER_ENV, CRASH_ENV,
                                                GENERATION_ENV))


def quiet_ray() -> None:
    """raybench prints its own progress lines; keep Ray's and Optuna's banners out of them.

    Ray 2.60.0: Train's worker health check polls every 2 s by default (a trial's start waits
    for one poll: ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``), the new AIR output engine prints
    its own trial tables (``RAY_AIR_NEW_OUTPUT``), and log deduplication folds raybench's
    per-trial lines (``RAY_DEDUP_LOGS``).
    """
    for key, value in (("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1"), ("RAY_AIR_NEW_OUTPUT", "0"),
                       ("RAY_DEDUP_LOGS", "0")):
        os.environ.setdefault(key, value)
    quiet_tune()


def quiet_tune() -> None:
    """Driver-side Tune settings read when ``fit`` starts (also on a Ray someone else started).

    Ray 2.60.0: Tune warns whenever an experiment checkpoint's sync takes longer than
    ``TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S`` (a warning per checkpoint
    on a slow S3); raybench reports checkpoint durations itself. Tune's controller logs every
    failed trial task with its full traceback (``TUNE_PRINT_ALL_TRIAL_ERRORS``); raybench logs
    one line per failed trial instead, and the traceback stays in the trial's ``error.txt``.
    """
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    for name, start, then in TUNE_ERRORS_ONE_LINE:
        logging.getLogger(name).addFilter(OneLineSyncError(start, then))
    for name, start in TUNE_LINES_DROPPED:
        logging.getLogger(name).addFilter(DropLines(start))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    skip_callback_telemetry()


#: Tune's lines that contradict raybench or report nothing wrong (Ray 2.60.0), by logger.
#: After Ctrl-C, ``tune.run`` advises ``Resume experiment with: Tuner.restore(path=...,
#: trainable=...)``: raybench's way is ``--resume``, which its own last line says. When the
#: result grid is built, ``ExperimentAnalysis`` warns ``Failed to fetch metrics for N trial(s)``
#: for every trial without ``result.json``: trials cut short before their first report and
#: trials that ended in an earlier session, whose results raybench reads from its own files.
#: ``Trials did not complete: [run_trial_...]`` (an ERROR line) names Tune's internal trial
#: names; raybench's exit line names the errored trials by trial id.
TUNE_LINES_DROPPED = (
    ("ray.tune.tune", "Experiment has been interrupted, but the most recent state was saved"),
    ("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics for "),
    ("ray.tune.tune", "Trials did not complete"),
)
#: Tune's failed experiment-state uploads, logged with a traceback, as one warning line each:
#: (logger, the message's start, what follows). The second is ``tune.run``'s final snapshot,
#: which fails when the results store stopped answering: raybench's exit line says so.
TUNE_ERRORS_ONE_LINE = (
    ("ray.tune.execution.experiment_state", "Saving experiment state",
     "Tune saves it again at its next checkpoint"),
    ("ray.tune.tune", "Experiment state snapshotting failed",
     "--resume starts from the last snapshot saved"),
)


class DropLines(logging.Filter):
    """Drops a logger's records whose message starts with ``start``; the others pass."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)

    def __eq__(self, other: object) -> bool:  # so that addFilter adds it once per logger
        return isinstance(other, DropLines) and other.start == self.start

    def __hash__(self) -> int:
        return hash(self.start)


class OneLineSyncError(logging.Filter):
    """Tune's failed experiment-state upload as one warning line, not an error traceback.

    Ray 2.60.0 logs ``Saving experiment state to storage ... failed with exception`` with the
    full traceback when an upload of its driver folder fails, typically because a file it had
    listed was replaced meanwhile (a searcher state's temporary file, seen on resumes in one
    Ray session). Tune goes on and uploads again at its next checkpoint; a resume from an older
    snapshot is handled (README, "Resume restores, or says why not"). Records whose message
    starts with ``start`` and carry an exception become ``<message> failed (<exception's first
    line>); <then>``.
    """

    def __init__(self, start: str = "Saving experiment state",
                 then: str = "Tune saves it again at its next checkpoint") -> None:
        super().__init__()
        self.start, self.then = start, then

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith(self.start):
            exc = record.exc_info[1]
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            record.msg = (f"{str(record.msg).split(' failed')[0]} failed ({type(exc).__name__}: "
                          f"{first}); {self.then}")
            record.args, record.exc_info, record.exc_text = (), None, None
            record.stack_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    def __eq__(self, other: object) -> bool:  # so that addFilter adds it once per logger
        return isinstance(other, OneLineSyncError) and other.start == self.start

    def __hash__(self) -> int:
        return hash(self.start)


def skip_callback_telemetry() -> None:
    """With Ray's usage stats off, skip Tune's callback telemetry.

    Ray 2.60.0: ``tune.run`` records which callbacks a sweep passes
    (``ray.air._internal.usage.tag_callbacks``) by importing every built-in logger
    integration, ``mlflow`` among them: 1.3 s of driver start (measured with ``cProfile`` on
    ``run_sweep``) whenever mlflow is installed, for a tag that is never sent when usage stats
    are disabled. Only the tag is skipped; a Ray without this function is left alone.
    """
    try:
        from ray._common.usage.usage_lib import usage_stats_enabled
        from ray.air._internal import usage as air_usage
    except ImportError:
        return
    if not usage_stats_enabled() and hasattr(air_usage, "tag_callbacks"):
        air_usage.tag_callbacks = lambda callbacks: False


class PendingTrials:
    """Lets Tune keep up to ``n`` trials pending (resource requests the autoscaler sees).

    Ray 2.60.0: Tune caps the trials it keeps pending (placement groups requested, not yet
    placed) at ``TUNE_MAX_PENDING_TRIALS_PG``, read when its controller starts; with a small
    cap an autoscaler never sees the demand of a large sweep. A user's own value is kept.
    """

    KEY = "TUNE_MAX_PENDING_TRIALS_PG"

    def __init__(self, n: int) -> None:
        self.n, self.set = n, self.KEY not in os.environ

    def __enter__(self) -> None:
        if self.set:
            os.environ[self.KEY] = str(self.n)

    def __exit__(self, *exc: Any) -> None:
        if self.set:
            os.environ.pop(self.KEY, None)


def is_remote(address: Optional[str]) -> bool:
    """Whether the sweep runs on a cluster someone else started (``--address``/``RAY_ADDRESS``)."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


#: The hint of :func:`check_reachable`'s line for a Ray cluster address.
RAY_HINT = "; start the cluster or drop --address to use a local Ray"


def _host_port(address: str) -> tuple[str, int]:
    """Host and port of ``host:port``, ``ray://host:port`` or ``http(s)://host[:port]``."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if port is None and parsed.scheme in ("http", "https"):
        port = 443 if parsed.scheme == "https" else 80
    if not parsed.hostname or port is None:
        raise RaybenchError(f"Ray address {address!r} is not host:port (or ray://host:port)")
    return parsed.hostname, port


def check_reachable(address: str, timeout_s: float = 3.0, *, what: str = "Ray",
                    hint: str = RAY_HINT) -> None:
    """Fails in ``timeout_s``, with one line, when nothing listens at an address.

    Args:
        address: ``host:port``, ``ray://host:port`` or a dashboard's ``http(s)://host[:port]``
            (``auto`` and ``local`` pass: Ray finds or starts those itself).
        timeout_s: Seconds to open the TCP connection.
        what: What listens there, for the line (``Ray``, ``the Ray dashboard``).
        hint: What to do, appended to the line; ``{port}`` is replaced by the port.
    """
    if address in ("auto", "local"):
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise RaybenchError(f"cannot reach {what} at {address}: {reason}"
                            f"{hint.format(port=port)}") from None


def ensure_ray(address: Optional[str], num_cpus: Optional[int] = None, *,
               tune: bool = True, num_gpus: Optional[int] = None) -> None:
    """Connects to ``address`` (or ``RAY_ADDRESS``), else starts an embedded local Ray.

    Args:
        address: A Ray address; None uses ``RAY_ADDRESS``, else starts a local Ray.
        num_cpus: CPUs of a local Ray (default: Ray's, all of them).
        num_gpus: GPUs of a local Ray (default: Ray's, the visible ones). Ray's GPUs are
            logical: more than there are is how tests pack trials on a CPU.
        tune: For a sweep: quiet Ray's, Tune's and Optuna's banners first (:func:`quiet_ray`,
            which imports Optuna) and give a local Ray its dashboard. A data command passes
            False: it needs neither, and keeps Ray's own dashboard default.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if tune:
        quiet_ray()
    token_auth(address)  # a given token means token mode; the local Ray's notice is dropped
    if address:
        check_reachable(address)  # one line in seconds, not Ray's minute of retries
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:  # "local": a new embedded Ray, even when a `ray start` cluster runs on this host
            # (Ray 2.60.0 otherwise joins the cluster in /tmp/ray/ray_current_cluster, and
            # refuses num_cpus there).
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus,
                     logging_level=logging.WARNING,
                     log_to_driver=False, include_dashboard=_dashboard() if tune else None)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RaybenchError(f"cannot connect to Ray at {address or 'local'}: "
                            f"{str(exc).splitlines()[0]}") from None


def _dashboard() -> Optional[bool]:
    """True when Ray's dashboard can start (its State API cleans up after Train worker groups
    stopped early); None on a minimal Ray (the trimmed wheels of benchmarks/gpu_wheels.sh),
    where asking for it would fail ``ray.init``."""
    from ray._private.utils import get_dashboard_dependency_error

    missing = get_dashboard_dependency_error()
    if missing is None:
        return True
    log.warning("Ray runs without its dashboard (%s; install ray[default]): a Train worker "
                "group stopped early may keep its placement group", missing)
    return None


#: Where a user gives Ray a cluster token (Ray also reads ~/.ray/auth_token in token mode).
TOKEN_ENV = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def token_auth(address: Optional[str]) -> None:
    """Token authentication as a user means it: a token given means token mode, and the
    embedded local Ray's token notice is not passed on.

    Ray 2.60.0: ``ray.init(address=...)`` with an explicit address turns token mode on only
    when ``RAY_AUTH_MODE=token`` (``_private/worker.py`` looks for a token only for an address
    it found itself), so a driver given ``RAY_AUTH_TOKEN`` alone connects without it and the
    head refuses every call. With a token in ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` and
    no ``RAY_AUTH_MODE``, raybench sets token mode, as Ray does itself on this path
    (``_enable_token_auth``: the variable, then a refresh of the cached config). A user's own
    ``RAY_AUTH_MODE`` is kept. A new local Ray enables token mode by default and warns
    "Token authentication is enabled ... Set RAY_AUTH_MODE=disabled to opt out" (a warning
    for a secure default, which reads like a failure): that record is dropped.
    """
    if not address or address == "local":  # a new Ray of this process
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            DropLines("Token authentication is enabled for this Ray cluster"))
        return
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    if not any(os.environ.get(key, "").strip() for key in TOKEN_ENV):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]
    except ImportError:  # a Ray without a cached config reads the variable itself
        return
    Config.initialize("")


def max_concurrent(spec: Spec, resources: dict[str, float], remote: bool = False) -> int:
    """How many trials fit *now*: CPUs (and GPUs) over what one trial holds.

    Only for the start-up line and the pending-trial count: trials start whenever resources
    are free, so concurrency follows the cluster. On a remote cluster that cannot hold one
    trial yet (an autoscaling KubeRay cluster whose GPU group is at zero), the autoscaler adds
    nodes for the pending trials; on the embedded local Ray nothing would ever come, so that
    is an error.
    """
    s = spec.scaling
    if s.max_concurrent_trials:
        return s.max_concurrent_trials
    per_trial_cpu = s.cpus_per_worker * s.num_workers + (0 if s.single_in_process else 1)
    fits = int(resources.get("CPU", 1) // max(per_trial_cpu, 1e-9))
    if s.use_gpu:
        gpu = s.worker_resources["GPU"] * s.num_workers
        fits = min(fits, int(resources.get("GPU", 0) // gpu))
    if fits < 1 and remote:
        log.warning("the cluster cannot hold one trial yet (%s); its autoscaler sees the "
                    "pending trials", resources)
        return 1
    if fits < 1:
        raise RaybenchError(f"one trial needs {per_trial_cpu:g} CPUs"
                            + (" and GPUs" if s.use_gpu else "")
                            + f" but the cluster has {resources.get('CPU', 0):g} CPUs, "
                            f"{resources.get('GPU', 0):g} GPUs; lower scaling.num_workers or "
                            "scaling.cpus_per_worker")
    return fits


def trial_slots(spec: Spec, address: Optional[str], num_cpus: Optional[int],
                num_gpus: Optional[int] = None) -> int:
    """Ray up (connected or started) and one trial known to fit; the trial slots there are now."""
    import ray

    ensure_ray(address, num_cpus, num_gpus=num_gpus)
    return max_concurrent(spec, ray.cluster_resources(), remote=is_remote(address))


def gpu_count() -> int:
    """GPUs of the connected Ray cluster now (at least 1: an autoscaler may add the first)."""
    import ray

    return max(1, int(ray.cluster_resources().get("GPU", 0)))


#: Seconds between the driver's checks that the Ray head still answers
#: (``RAYBENCH_HEAD_CHECK_S`` overrides it), and the failed checks in a row after which the
#: head counts as lost (about 30 s with the 3 s connect timeout).
HEAD_CHECK_S = 5.0
HEAD_LOST_AFTER = 4


def head_check_s() -> float:
    """Seconds between head checks: ``RAYBENCH_HEAD_CHECK_S`` or :data:`HEAD_CHECK_S`."""
    raw = os.environ.get("RAYBENCH_HEAD_CHECK_S")
    try:
        value = float(raw) if raw else HEAD_CHECK_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise RaybenchError(f"RAYBENCH_HEAD_CHECK_S={str(raw)[:20]!r}: expected seconds > 0")
    return value


def head_address() -> Optional[str]:
    """The GCS address (host:port) of the Ray this driver is connected to, or None."""
    try:
        import ray

        return ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    except Exception:  # no runtime context: nothing to watch
        return None


class HeadWatch:
    """Ends the driver with one line when the Ray head stops answering mid-sweep.

    Ray 2.60.0: a driver whose head (GCS) died waits for it to come back
    (``gcs_rpc_server_reconnect_timeout_s``, 60 s by default) and then aborts with a native
    stack trace, or hangs in ``Tuner.fit``. This thread probes the head's port every
    :func:`head_check_s` seconds; after :data:`HEAD_LOST_AFTER` failures in a row it writes
    one line to stderr and exits with status 1. The sweep's files stay as they were, so
    ``--resume`` on a new cluster continues it (the dead driver's lease is stale: its process
    is gone).
    """

    def __init__(self, address: Optional[str]) -> None:
        self.address = address
        self.interval_s = head_check_s() if address else HEAD_CHECK_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raybench-head", daemon=True)

    def _run(self) -> None:
        failed = 0
        while self.address and not self._stop.wait(self.interval_s):
            try:
                check_reachable(self.address, timeout_s=3.0)
                failed = 0
            except RaybenchError:
                failed += 1
            if failed >= HEAD_LOST_AFTER:
                stop_now(f"lost the Ray head at {self.address} mid-sweep; start a cluster "
                         "and continue with --resume", 1)

    def __enter__(self) -> "HeadWatch":
        if self.address:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
