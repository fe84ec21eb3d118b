"""Submit a sweep to a running Ray cluster through Ray's Job Submission API, and query its jobs.

The job runs the same command as on a laptop, ``raybench sweep --config SPEC --results URI``, on
the cluster's head node. Two ways to get raybench there (``runtime``):

* ``workdir`` (default): this checkout (pyproject.toml + ``raybench/`` + ``jobs/``) is uploaded as
  the job's ``working_dir`` (without virtual environments, results, caches and VCS data) and the
  job runs ``python -m raybench.cli``, so the cluster runs exactly the local code.
* ``installed``: nothing is uploaded; the cluster image has raybench installed (``k8s/Dockerfile``)
  and ``--config`` names a spec file on the cluster.

Token authentication (Ray >= 2.52): the token comes from ``RAY_AUTH_TOKEN``, the file named by
``RAY_AUTH_TOKEN_PATH`` or, with ``RAY_AUTH_MODE=token``, ``~/.ray/auth_token``. It is sent as a
bearer header and never printed: messages and streamed logs are redacted.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

from raybench.cluster import check_reachable
from raybench.config import load_spec
from raybench.config.spec import DEFAULT_CACHE_DIR
from raybench.errors import RaybenchError
from raybench.storage import redact

log = logging.getLogger(__name__)

DEFAULT_PORT = 8265
#: Seconds to open a TCP connection to the Jobs API.
CONNECT_TIMEOUT_S = 5.0
#: Seconds to wait for each answer of the Jobs API (``RAYBENCH_HTTP_TIMEOUT_S`` overrides it).
READ_TIMEOUT_S = 30.0
#: Seconds between status checks while following a job's log stream.
STREAM_CHECK_S = 30.0
# Never uploaded with the working dir (gitignore-style patterns, as Ray's `excludes`).
WORKDIR_EXCLUDES = [".git", ".venv", "venv", "runs", DEFAULT_CACHE_DIR, "__pycache__",
                    "*.egg-info", ".pytest_cache", ".mypy_cache", "build", "dist", "*.pyc"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
#: What to check when the dashboard's port does not answer (``{port}``: its port).
DASHBOARD_HINT = (" (is the head running and its port {port} reachable, e.g. through "
                  "kubectl port-forward?)")


@dataclass(frozen=True)
class SubmitOptions:
    """What to run on the cluster.

    Attributes:
        address: Dashboard URL of the head, e.g. ``http://HEAD:8265``.
        config: Sweep spec YAML (workdir: a local file inside the working dir; installed: a path
            on the cluster).
        overrides: ``--set key=value`` items, passed to the job unchanged.
        results: Results root for the job (``s3://bucket/prefix`` on a real cluster).
        resume: Continue an interrupted sweep (``raybench sweep --resume``).
        overwrite: Replace an existing sweep of the same name (``raybench sweep --overwrite``).
        runtime: ``workdir`` (upload this checkout) or ``installed`` (the image has raybench).
        working_dir: Folder to upload (default: the checkout that holds ``config``).
        job_id: Submission id (default ``raybench-<sweep>-<8 hex>``).
        env: Extra non-secret environment variables for the job (``KEY=VALUE``).
    """

    address: Optional[str]
    config: str
    overrides: tuple[str, ...] = ()
    results: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    runtime: str = "workdir"
    working_dir: Optional[str] = None
    job_id: Optional[str] = None
    env: tuple[str, ...] = field(default_factory=tuple)


# --- address and authentication -------------------------------------------------------------

def dashboard_url(address: Optional[str]) -> str:
    """``http://host:port`` of the Jobs API: ``address``, RAY_API_SERVER_ADDRESS or RAY_ADDRESS."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address or address == "auto" or address.startswith("ray://"):
        raise RaybenchError(f"no Ray dashboard address (got {address!r}): pass --address "
                            "http://HEAD:8265 or set RAY_API_SERVER_ADDRESS")
    if "://" not in address:
        address = f"http://{address}"
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RaybenchError(f"--address {address!r}: expected http(s)://HOST:PORT, "
                            f"e.g. http://127.0.0.1:{DEFAULT_PORT}")
    return address.rstrip("/")


def read_timeout_s() -> float:
    """The Jobs API read timeout: ``RAYBENCH_HTTP_TIMEOUT_S`` or :data:`READ_TIMEOUT_S`.

    Raises:
        RaybenchError: The variable is not a positive number.
    """
    text = os.environ.get("RAYBENCH_HTTP_TIMEOUT_S")
    if not text:
        return READ_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise RaybenchError(f"RAYBENCH_HTTP_TIMEOUT_S={text[:20]!r}: expected seconds > 0")
    return value


def auth_token() -> Optional[str]:
    """The cluster token from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token, or None.

    The default file is read only with ``RAY_AUTH_MODE=token`` (as Ray does).

    Raises:
        RaybenchError: RAY_AUTH_TOKEN_PATH names an unreadable or empty file, or token mode is on
            and no token is found.
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    if not path and token_mode:
        default = Path.home() / ".ray" / "auth_token"
        path = str(default) if default.is_file() else None
    if path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RaybenchError(f"cannot read the Ray auth token file {path} "
                                f"(RAY_AUTH_TOKEN_PATH): {exc.strerror or exc}") from None
        if not token:
            raise RaybenchError(f"the Ray auth token file {path} is empty")
        return token
    if token_mode:
        raise RaybenchError("RAY_AUTH_MODE=token but no token found: set RAY_AUTH_TOKEN, "
                            "RAY_AUTH_TOKEN_PATH or write ~/.ray/auth_token")
    return None


def _redact(text: str, token: Optional[str]) -> str:
    if token:
        text = text.replace(token, "***")
    return redact(text)


@contextmanager
def _jobs_api_errors(url: str, token: Optional[str]) -> Iterator[None]:
    """Turns the SDK's exceptions into one-line RaybenchErrors without the token."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError:
        # Ray may attach a token cached by an earlier ray.init in this process, so what the
        # user gave us (a token or none) decides the message, not the server's wording.
        if token:
            raise RaybenchError(f"the Ray cluster at {url} rejected the authentication token "
                                "(check RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH against the "
                                "cluster's secret)") from None
        raise RaybenchError(f"the Ray cluster at {url} requires token authentication: set "
                            "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or RAY_AUTH_MODE=token with "
                            "~/.ray/auth_token) to the cluster's token") from None
    except requests.Timeout:
        raise RaybenchError(f"Ray Jobs API at {url}: no answer within {read_timeout_s():g} s "
                            f"(connect timeout {CONNECT_TIMEOUT_S:g} s; is {url} the Ray "
                            "dashboard, and is the head healthy? RAYBENCH_HTTP_TIMEOUT_S "
                            "raises the limit)") from None
    except ConnectionError as exc:
        raise RaybenchError(f"cannot reach the Ray Jobs API at {url}: "
                            f"{_redact(str(exc).splitlines()[0], token)}") from None
    except (RuntimeError, ValueError, OSError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise RaybenchError(f"Ray Jobs API at {url}: {_redact(first.strip(), token)}") from None


def _sdk_class() -> type:
    """Ray's ``JobSubmissionClient`` with a (connect, read) timeout on every HTTP request.

    The SDK calls ``requests`` without a timeout, so a server that accepts the connection and
    never answers would hang it forever; every request goes through ``_do_request``.
    """
    from ray.job_submission import JobSubmissionClient

    class _TimedClient(JobSubmissionClient):
        def __init__(self, address: str, *, timeout: tuple[float, float], **kwargs: Any):
            self._raybench_timeout = timeout  # set first: __init__ already makes a request
            super().__init__(address, **kwargs)

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self._raybench_timeout)
            return super()._do_request(method, endpoint, **kwargs)

    return _TimedClient


class JobsClient:
    """A Job Submission client with raybench's errors, auth header and redaction."""

    def __init__(self, address: Optional[str]):
        self.url = dashboard_url(address)
        self.token = auth_token()
        self.timeout = (CONNECT_TIMEOUT_S, read_timeout_s())
        check_reachable(self.url, CONNECT_TIMEOUT_S, what="the Ray dashboard", hint=DASHBOARD_HINT)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        with self.errors():
            self.sdk = _sdk_class()(self.url, headers=headers, timeout=self.timeout)

    def errors(self):
        """Context manager: SDK exceptions -> one-line RaybenchError."""
        return _jobs_api_errors(self.url, self.token)

    def redact(self, text: str) -> str:
        return _redact(text, self.token)


# --- building the job ------------------------------------------------------------------------

def find_checkout(start: Path) -> Path:
    """The nearest folder at or above ``start`` with pyproject.toml and a raybench package."""
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").is_file() and (folder / "raybench/__init__.py").is_file():
            return folder
    raise RaybenchError(f"no raybench checkout (pyproject.toml + raybench/) at or above {start}: "
                        "pass --working-dir, or use --runtime installed with a cluster image "
                        "that has raybench (k8s/Dockerfile)")


def _sweep_args(opts: SubmitOptions, config: str) -> list[str]:
    args = ["sweep", "--config", config]
    for item in opts.overrides:
        args += ["--set", item]
    if opts.results:
        args += ["--results", opts.results]
    if opts.resume:
        args.append("--resume")
    if opts.overwrite:
        args.append("--overwrite")
    return args


def job_request(opts: SubmitOptions) -> dict[str, Any]:
    """Keyword arguments of ``submit_job``: entrypoint, runtime_env, submission_id, metadata.

    Validates the spec locally first (when the file is here), so a typo fails in a second,
    not after the upload.
    """
    if opts.runtime not in ("workdir", "installed"):
        raise RaybenchError(f"--runtime {opts.runtime!r}: expected workdir or installed")
    overrides = list(opts.overrides) + ([f"results={opts.results}"] if opts.results else [])
    local = Path(opts.config)
    if opts.runtime == "workdir" or local.is_file():
        spec = load_spec(local, overrides)
        name = spec.name
        if "://" not in spec.results and not os.path.isabs(spec.results):
            log.warning("results root %r is relative: it lands in the job's working dir on the "
                        "head node; pass --results s3://bucket/prefix for a cluster", spec.results)
    else:
        name = local.stem
        log.info("%s is not a local file: the cluster validates it", opts.config)
    env = dict(_parse_env(opts.env))
    runtime_env: dict[str, Any] = {"env_vars": env} if env else {}
    if opts.runtime == "workdir":
        root = Path(opts.working_dir).resolve() if opts.working_dir else find_checkout(
            local.resolve().parent)
        try:
            config = local.resolve().relative_to(root).as_posix()
        except ValueError:
            raise RaybenchError(f"--config {opts.config} is outside the working dir {root}: "
                                "put the spec in the checkout (e.g. jobs/)") from None
        runtime_env.update(working_dir=str(root), excludes=list(WORKDIR_EXCLUDES))
        command = ["python", "-m", "raybench.cli", *_sweep_args(opts, config)]
    else:
        command = ["raybench", *_sweep_args(opts, opts.config)]
    job_id = opts.job_id or f"raybench-{name}-{uuid.uuid4().hex[:8]}"
    return {"entrypoint": shlex.join(command), "runtime_env": runtime_env or None,
            "submission_id": job_id,
            "metadata": {"raybench_sweep": name, "raybench_config": opts.config}}


def _parse_env(items: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RaybenchError(f"--env {item!r}: expected KEY=VALUE")
        if any(word in key.upper() for word in ("SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY")):
            raise RaybenchError(f"--env {key}: credentials do not go through --env (job metadata "
                                "is readable on the dashboard); give the cluster a Kubernetes "
                                "secret instead")
        yield key, value


# --- operations ------------------------------------------------------------------------------

def submit(client: JobsClient, request: dict[str, Any]) -> str:
    """Submits a :func:`job_request`; returns the job id."""
    log.info("submitting %s to %s", request["entrypoint"], client.url)
    with client.errors():
        return client.sdk.submit_job(**request)


def status(client: JobsClient, job_id: str) -> tuple[str, str]:
    """(status, message) of a job, e.g. ``("FAILED", "Job entrypoint command failed ...")``."""
    with client.errors():
        info = client.sdk.get_job_info(job_id)
    return str(getattr(info.status, "value", info.status)), client.redact(info.message or "")


def logs(client: JobsClient, job_id: str) -> str:
    """The job's whole log so far (redacted)."""
    with client.errors():
        return client.redact(client.sdk.get_job_logs(job_id))


def stop(client: JobsClient, job_id: str) -> bool:
    """Asks the cluster to stop the job; False when it had already finished."""
    with client.errors():
        return bool(client.sdk.stop_job(job_id))


def follow(client: JobsClient, job_id: str, write: Callable[[str], Any],
           poll_s: float = 0.5, settle_s: float = 30.0) -> str:
    """Streams the job's logs through ``write`` until it ends; returns its final status."""

    async def tail() -> None:
        await _tail_with_checks(client, job_id, write)

    from ray.exceptions import AuthenticationError

    with client.errors():
        try:
            asyncio.run(tail())
        except (AuthenticationError, RaybenchError):
            raise
        except Exception as exc:  # noqa: BLE001 - the websocket dropped: fall back to polling
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("log stream interrupted (%s); waiting for the job to end",
                        client.redact(reason))
            return _poll_until_done(client, job_id, poll_s, deadline_s=None)
    # The stream closes when the job ends; its status may lag behind by a moment.
    return _poll_until_done(client, job_id, poll_s, deadline_s=settle_s)


async def _tail_with_checks(client: JobsClient, job_id: str, write: Callable[[str], Any]) -> None:
    """Streams log chunks; when none comes for :data:`STREAM_CHECK_S`, asks the job's status.

    A quiet job is normal, a dead server is not: the status request has a deadline, so a
    server that stops answering ends the stream with one line instead of a hang.
    """
    stream = client.sdk.tail_job_logs(job_id).__aiter__()
    pending = asyncio.ensure_future(stream.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=STREAM_CHECK_S)
            if not done:
                state, _ = await asyncio.to_thread(status, client, job_id)
                if state in TERMINAL:
                    return
                continue
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            write(client.redact(chunk))
            pending = asyncio.ensure_future(stream.__anext__())
    finally:
        pending.cancel()


def _poll_until_done(client: JobsClient, job_id: str, poll_s: float,
                     deadline_s: Optional[float]) -> str:
    start = time.monotonic()
    while True:
        state, _ = status(client, job_id)
        if state in TERMINAL:
            return state
        if deadline_s is not None and time.monotonic() - start > deadline_s:
            return state
        time.sleep(poll_s)


def exit_code(state: str) -> int:
    """0 when the job succeeded, 1 when it failed or was stopped (or never finished)."""
    return 0 if state == "SUCCEEDED" else 1
