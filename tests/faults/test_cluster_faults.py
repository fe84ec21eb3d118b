"""The cluster's membership changing under a sweep, on Ray's own multi-node harness
(``ray.cluster_utils.Cluster``): a node joining mid-sweep (more trials at once) and then lost
(its trials retried), and the head lost mid-sweep (through ``raybench sweep --address``).

The results live on the local S3 server (moto), as a real cluster's do: its nodes share no disk.
The nodes and the driver inherit the ``s3_bucket`` fixture's ``AWS_*`` variables (endpoint and
credentials), set before the cluster starts. Sweeps to a shared local folder are covered by the
many local sweeps."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raybench.store import ResultStore
from tests.helpers.sweepchecks import trials_once_each

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.cluster, pytest.mark.slow, pytest.mark.s3]
TINY = ["model.image_size=32", "data.synthetic.per_class=12", "data.synthetic.size=32",
        "train.num_threads=1", "cam.enabled=false", "sweep.mode=paper", "sweep.models=[cnnx]",
        "sweep.progress_interval_s=5"]


def _sweep(root: str, tmp: Path, address: str, *sets: str, resume: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "raybench.cli", "sweep", "--config",
           str(REPO / "jobs" / "smoke.yaml"), "--results", root, "--address", address]
    for item in [*TINY, f"data.cache_dir={tmp / 'cache'}", *sets]:
        cmd += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    env["RAYBENCH_HEAD_CHECK_S"] = "0.5"  # a lost head ends the driver in ~2 s instead of ~20 s
    return subprocess.Popen(cmd + (["--resume"] if resume else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(store: ResultStore, sweep: str, n: int, timeout_s: float = 300) -> None:
    """Until ``n`` trials have written their epochs file (on S3)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and len(store.file_names(sweep, "epochs", ".parquet")) < n:
        time.sleep(0.3)


def test_a_node_joining_raises_concurrency_and_losing_it_retries_its_trials(
        tmp_path: Path, s3_bucket: str) -> None:
    """One cluster, two faults of its membership: a 1-CPU head runs one trial at a time; a
    2-CPU node joins mid-sweep and more trials run at once, on both nodes; once a trial has
    finished there the node is lost, its running trials are retried on the head, and the
    sweep completes with every trial once (Ray's own multi-node harness, DESIGN.md section 8).
    """
    import threading

    import pandas as pd
    import ray
    from ray.cluster_utils import Cluster

    from raybench.config import load_spec
    from raybench.results import load
    from raybench.tune.sweep import run_sweep

    root = f"s3://{s3_bucket}/r"
    store = ResultStore(root)
    seeds = list(range(8))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    spec = load_spec(None, [
        "name=grow", f"results={root}", f"data.cache_dir={tmp_path / 'cache'}",
        # Trials of a few seconds, so the sweep outlasts the new node's worker start (~8 s).
        "model.image_size=64", "data.synthetic.per_class=24", "data.synthetic.size=64",
        "train.num_threads=1", "train.epochs=4", "cam.enabled=false", "sweep.mode=paper",
        "sweep.models=[cnnx]", f"sweep.seeds={seeds}", "scaling.max_failures=3"])
    out: dict[str, object] = {}

    def sweep() -> None:  # Ray adds nodes from the main thread only: the sweep runs beside it
        try:
            out["summary"] = run_sweep(spec, address=cluster.address)
        except BaseException as exc:  # re-raised below, in the test's thread
            out["error"] = exc

    driver = threading.Thread(target=sweep, daemon=True)
    driver.start()
    try:
        _wait_for(store, "grow", 1)
        node = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        joined = pd.Timestamp.now(tz="UTC")
        deadline = time.time() + 300  # until a trial has finished on the new node
        while time.time() < deadline and driver.is_alive():
            if store.file_names("grow", "runs", ".parquet") and \
                    store.read_table("grow", "runs")["node"].nunique() == 2:
                break
            time.sleep(0.3)
        cluster.remove_node(node)
        lost = pd.Timestamp.now(tz="UTC")
        driver.join(timeout=500)
        if "error" in out:
            raise out["error"]  # type: ignore[misc]
        summary = out["summary"]
        tl = load(root, "grow").timeline()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert [s["status"] for s in summary] == ["completed"] * len(seeds)
    trials_once_each(store, "grow", [f"cnnx-synthetic-s{s}" for s in seeds], 4)
    assert tl["finished_at"].max() > lost, "the node was lost during the sweep"

    def running_at(t: pd.Timestamp) -> int:
        return int(((tl["started_at"] <= t) & (tl["finished_at"] > t)).sum())

    before = tl[tl["started_at"] < joined]
    assert max(running_at(t) for t in before["started_at"]) == 1  # one CPU: one trial at once
    between = tl[(tl["started_at"] >= joined) & (tl["started_at"] < lost)]
    assert max(running_at(t) for t in between["started_at"]) >= 2, tl.to_string()
    assert tl["node"].nunique() == 2  # trials ran on both nodes


def test_the_head_lost_mid_sweep_is_one_line_then_resume_on_a_new_cluster(
        tmp_path: Path, s3_bucket: str) -> None:
    from ray.cluster_utils import Cluster

    root = f"s3://{s3_bucket}/r"
    sets = ["name=head", "sweep.seeds=[0, 1, 2]", "train.epochs=4",
            "scaling.max_concurrent_trials=1"]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        proc = _sweep(root, tmp_path, cluster.address, *sets)
        _wait_for(ResultStore(root), "head", 1)
    finally:
        lost_at = time.monotonic()
        cluster.shutdown()
    _, err = proc.communicate(timeout=150)
    took = time.monotonic() - lost_at
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench")]
    assert proc.returncode not in (0, None) and took < 60, (proc.returncode, took, err[-3000:])
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith("raybench: error: lost the Ray head at ")
    assert lines[0].endswith("mid-sweep; start a cluster and continue with --resume")

    fresh = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        again = _sweep(root, tmp_path, fresh.address, *sets, resume=True)
        _, err = again.communicate(timeout=500)
    finally:
        fresh.shutdown()
    said = [ln for ln in err.splitlines() if ln.startswith("raybench") or "Error" in ln]
    assert again.returncode == 0, "\n".join(said[-20:])
    assert "Traceback" not in err, err[-3000:]
    trials_once_each(ResultStore(root), "head", [f"cnnx-synthetic-s{s}" for s in range(3)], 4)
