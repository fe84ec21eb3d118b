"""Concurrency follows the cluster: a node joining mid-sweep runs more trials at once
(Ray's own multi-node harness, ``ray.cluster_utils.Cluster``, DESIGN.md section 8)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from raybench.config import load_spec

pytestmark = [pytest.mark.ray, pytest.mark.cluster, pytest.mark.slow]


def test_a_node_joining_mid_sweep_raises_concurrency(tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from raybench.results import load
    from raybench.tune.sweep import run_sweep

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    spec = load_spec(None, [
        "name=grow", f"results={tmp_path / 'r'}", f"data.cache_dir={tmp_path / 'cache'}",
        # Trials of a few seconds, so the sweep outlasts the new node's worker start (~8 s).
        "model.image_size=64", "data.synthetic.per_class=24", "data.synthetic.size=64",
        "train.num_threads=1", "train.epochs=4", "cam.enabled=false", "sweep.mode=paper",
        "sweep.models=[cnnx]", "sweep.seeds=[0, 1, 2, 3, 4, 5, 6, 7]"])
    epochs = tmp_path / "r" / "grow" / "epochs"
    out: dict[str, object] = {}

    def sweep() -> None:  # Ray adds nodes from the main thread only: the sweep runs beside it
        try:
            out["summary"] = run_sweep(spec, address=cluster.address)
        except BaseException as exc:  # re-raised below, in the test's thread
            out["error"] = exc

    driver = threading.Thread(target=sweep, daemon=True)
    driver.start()
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(epochs.glob("*.parquet")):
            time.sleep(0.2)
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        joined = pd.Timestamp.now(tz="UTC")
        driver.join(timeout=400)
        if "error" in out:
            raise out["error"]  # type: ignore[misc]
        summary = out["summary"]
        tl = load(str(tmp_path / "r"), "grow").timeline()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert [s["status"] for s in summary] == ["completed"] * 8
    assert tl["finished_at"].max() > joined, "the second node joined during the sweep"

    def running_at(t: pd.Timestamp) -> int:
        return int(((tl["started_at"] <= t) & (tl["finished_at"] > t)).sum())

    before = tl[tl["started_at"] < joined]
    assert max(running_at(t) for t in before["started_at"]) == 1  # one CPU: one trial at once
    after = tl[tl["started_at"] >= joined]
    assert max(running_at(t) for t in after["started_at"]) >= 2, tl.to_string()
    assert tl["node"].nunique() == 2  # trials ran on both nodes
