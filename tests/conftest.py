"""Shared fixtures: tiny synthetic chest X-rays, the real shared data, CLI runner."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import pytest

from tests.helpers.rayenv import RAY_WORKER_ENV

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never download anything and never write outside tmp paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Every Ray the tests start runs without token authentication, unless a test is about it
# (tests/test_token_auth.py, tests/test_submit.py set their own). Ray 2.60.0: a new local
# ``ray.init()`` with the mode unset turns token mode on in ``os.environ`` for the rest of the
# process (``enable_token_auth_by_default``): CLI drivers started afterwards inherit it, and on
# the session's Ray (no token) none of their trial actors ever start ("The actor never ran -
# it was cancelled before it started running"), in whichever test came after such a Ray.
os.environ["RAY_AUTH_MODE"] = "disabled"
# Every Ray the tests start (the session's, clusters, the CLI's own) starts its workers on
# demand: Ray otherwise starts one per logical CPU for its first driver, and a CLI sweep on
# its own Ray then leaves some of them unused (2 of 4 for jobs/smoke.yaml).
os.environ["RAY_prestart_worker_first_driver"] = "0"


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes x 40 synthetic images at 64 px (seed 0); returns the manifest path."""
    from raybench.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, per_class=40, size=64, seed=0)
    return out / "manifest.parquet"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real images next to the repository (skips when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real chest X-rays not found at {SHARED_DATA} (../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_films(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The shared Kermany (5,232 films) and Hannover (243) sets imported once for the session,
    serially: the tests using them are about the importers and scenarios, not the Ray fan-out
    (test_prepare's), and an embedded Ray would start for them alone.

    Returns a namespace: ``kermany`` and ``hannover`` (ImportResult), ``manifest`` (both
    written to one manifest, Kermany first; read-only for the tests) and ``merged`` (what the
    appending write returned).
    """
    from types import SimpleNamespace

    from raybench.data import prepare
    from raybench.data.importers import ImportOptions, import_dataset, write_import

    saved = prepare.LOCAL_RAY_MIN_ITEMS
    prepare.LOCAL_RAY_MIN_ITEMS = sys.maxsize  # no embedded Ray (a connected one is still used)
    try:
        kermany = import_dataset("kermany", shared_data / "kermany-cxr-train")
        hannover = import_dataset("metadata-csv", shared_data / "hannover-covid" / "data.csv",
                                  ImportOptions(label="covid19", source="hannover"))
        manifest = tmp_path_factory.mktemp("shared-films") / "m.parquet"
        write_import(kermany, manifest)
        merged = write_import(hannover, manifest, append=True)
    finally:
        prepare.LOCAL_RAY_MIN_ITEMS = saved
    return SimpleNamespace(kermany=kermany, hannover=hannover, manifest=manifest, merged=merged)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Runs ``raybench ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from raybench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API over HTTP on 127.0.0.1 (moto's server mode, no boto3 patching)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """A fresh bucket on the local S3 server; the AWS_* variables point at it. Returns its name."""
    import re
    import uuid

    import boto3

    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "rbtestkey",
           "AWS_SECRET_ACCESS_KEY": "rb-test-secret-0123456789", "AWS_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: on a busy 2-core machine 2 OpenMP threads ran DenseNet up to 50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_SHARED_RAY: dict[str, str] = {}  # the session Ray's GCS address while it runs


@pytest.fixture(scope="session")
def ray_decode_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where the session Ray's workers log each image they decode (one empty file
    per decode; tests/data/test_prepare.py counts them)."""
    return tmp_path_factory.mktemp("decodes")


def _start_shared_ray(decode_log: Path) -> str:
    import ray

    from raybench.data.cache import DECODE_LOG_ENV

    from ray._raylet import Config

    # Token authentication off for the session's Ray, in its processes (the environment they
    # inherit) and in this one (Ray caches its config, auth mode included, at first use: a test
    # that changed the mode earlier would leave the driver without the token a new local Ray
    # asks for: "InvalidAuthToken ... RAY_AUTH_MODE is currently 'disabled'"). Token mode has
    # its own tests (tests/test_token_auth.py).
    # The mode stays set in this process afterwards: the CLI drivers that join this Ray
    # inherit it (see the top of this file).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**RAY_WORKER_ENV, DECODE_LOG_ENV: str(decode_log)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    Config.initialize("")
    try:
        # the dashboard on, as a sweep's own local Ray has it: without Ray's State API an early
        # stopped trial's placement group leaks and the next trial waits for it forever
        ray.init(address="local", num_cpus=4, include_dashboard=True, logging_level="WARNING",
                 log_to_driver=False)
    finally:  # the workers have it; the tests' own process stays as it was
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    _SHARED_RAY["address"] = ray.get_runtime_context().gcs_address
    return _SHARED_RAY["address"]


def _shared_ray_up() -> bool:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or "address" not in _SHARED_RAY:
        return False
    return ray.get_runtime_context().gcs_address == _SHARED_RAY["address"]


@pytest.fixture(scope="session")
def _shared_ray_session():
    """Shuts the session Ray down once, at the end of the session."""
    yield
    if _shared_ray_up():
        sys.modules["ray"].shutdown()
    _SHARED_RAY.clear()


@pytest.fixture(scope="module")
def local_ray(_shared_ray_session, ray_decode_log: Path) -> str:
    """The session's local Ray (4 logical CPUs, its dashboard, quiet workers, RAY_WORKER_ENV);
    returns its GCS address, for CLI drivers that join it with ``--address``.

    Started once and kept across modules (the modules that use it run together, see
    ``pytest_collection_modifyitems``); started again only if a test with its own Ray (a
    cluster, a Ray with other settings) shut it down in between.
    """
    if _shared_ray_up():
        return _SHARED_RAY["address"]
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()  # a Ray that a previous module left: not this fixture's settings
    return _start_shared_ray(ray_decode_log)


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_behind(request: pytest.FixtureRequest):
    """Shuts down a Ray that a module's tests started themselves (an import or audit of enough
    images fans out on an embedded local Ray, as the CLI does; a module's own ``ray.init``),
    so the next module starts clean instead of failing with "called ray.init twice". The
    session Ray stays up for the next module that uses it; a module that does not use it
    finds no Ray running (it may start its own)."""
    if request.module not in _modules_on_shared_ray(request.session.items) and _shared_ray_up():
        sys.modules["ray"].shutdown()
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and not _shared_ray_up():
        ray.shutdown()


def _ray_up() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _modules_on_shared_ray(items: list[pytest.Item]) -> set:
    return {getattr(item, "module", None) for item in items
            if "local_ray" in getattr(item, "fixturenames", ())}


#: The ``xdist_group`` of the tests that must share one pytest-xdist worker (``make test``
#: runs two, ``--dist loadgroup``): the session Ray's modules (one Ray, started once); the
#: tests that start Rays of their own (clusters, token-mode heads, whole scripts), one after
#: another beside the session Ray's stream rather than inside it; the tests of the shared
#: films (imported once). Every other test goes to whichever worker is free.
SESSION_RAY_GROUP, OWN_RAY_GROUP, SHARED_FILMS_GROUP = "session-ray", "own-ray", "shared-films"


def _xdist_group(item: pytest.Item, shared: set) -> Optional[str]:
    if getattr(item, "module", None) in shared:
        return SESSION_RAY_GROUP
    if item.get_closest_marker("ray") or item.get_closest_marker("cluster"):
        return OWN_RAY_GROUP
    if "shared_films" in getattr(item, "fixturenames", ()):
        return SHARED_FILMS_GROUP
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses ``local_ray`` is a ``ray`` test (``make test-fast`` leaves it out).

    The modules that use the session Ray run last, together, each in its collected order:
    the Ray starts once for them all rather than once for each run of them between modules
    that start their own Ray (clusters, other settings) or must find none running. Under
    pytest-xdist each test also gets its group (:func:`_xdist_group`).
    """
    for item in items:
        if "local_ray" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.ray)
    shared = _modules_on_shared_ray(items)
    for item in items:
        group = _xdist_group(item, shared)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: getattr(item, "module", None) in shared)  # stable


@pytest.fixture(autouse=True)
def ray_tests_are_marked(request: pytest.FixtureRequest):
    """Warns when a test not marked ``ray`` left a Ray running (an embedded one that a CLI
    command or a large import started): ``make test-fast`` would start Ray for it."""
    before = _ray_up()
    yield
    if not before and _ray_up() and request.node.get_closest_marker("ray") is None:
        import warnings

        warnings.warn(pytest.PytestWarning(f"{request.node.nodeid} started Ray but is not "
                                           "marked ray"), stacklevel=1)


_SESSION: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _SESSION["exitstatus"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leaves with pytest's own status, skipping interpreter teardown.

    Once, after every test had passed and the summary was printed, the interpreter crashed
    (SIGSEGV) while tearing down: pyarrow's S3 client is finalised at exit while background
    threads of Ray's driver-side syncer may still hold it. The results are final by then;
    this keeps a teardown crash in third-party code from turning a green run red.
    """
    # An xdist worker ends normally: its last reports (and coverage data) go to the controller.
    if "exitstatus" in _SESSION and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION["exitstatus"])
