"""Faults of the cluster itself, through ``raybench sweep --address`` against Ray's own multi-node
harness (``ray.cluster_utils.Cluster``): a worker node lost mid-sweep, the head lost mid-sweep.

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


def test_a_worker_node_lost_mid_sweep_retries_its_trials(tmp_path: Path, s3_bucket: str) -> None:
    from ray.cluster_utils import Cluster

    root = f"s3://{s3_bucket}/r"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        proc = _sweep(root, tmp_path, cluster.address, "name=lose", "sweep.seeds=[0, 1, 2, 3]",
                      "train.epochs=4", "scaling.max_failures=3")
        _wait_for(ResultStore(root), "lose", 2)  # trials on both nodes are training
        cluster.remove_node(worker)
        _, err = proc.communicate(timeout=500)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, err[-3000:]
    trials_once_each(ResultStore(root), "lose", [f"cnnx-synthetic-s{s}" for s in range(4)], 4)


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
