"""Decoded once per cluster: two Ray nodes (``ray.cluster_utils.Cluster``) with separate local
cache folders share one S3 store (moto's HTTP server); every image is decoded exactly once."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from raybench import schema as S
from raybench.data import cache

pytestmark = [pytest.mark.ray, pytest.mark.cluster, pytest.mark.s3, pytest.mark.slow]

N = 90


def _films(root: Path) -> Path:
    rng = np.random.default_rng(3)
    for i in range(N):
        label = ("normal", "viral", "bacteria")[i % 3]
        (root / label).mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (80, 80), dtype=np.uint8)
        Image.fromarray(arr).save(root / label / f"{i:03d}.png")
    return root


def _read_on_node(manifest: str, size: int, cache_dir: str, local_dir: str,
                  shard_rows: int) -> dict[str, Any]:
    """What a trial does: open the manifest's cache entry (building missing shards)."""
    from raybench.data import manifest as mf
    from raybench.data.cache import decoded_images

    cache.SHARD_ROWS = shard_rows  # this worker process's copy of the module
    df = mf.read_manifest(Path(manifest))
    files = mf.image_files(Path(manifest), list(df[S.PATH]))
    entry = decoded_images(df, files, size, cache_dir, local_dir=local_dir)
    return {"images": np.asarray(entry.images), "built": entry.built,
            "local": [str(p) for p in entry.files]}


def _decodes(log_dir: Path) -> int:
    return len(list(log_dir.iterdir()))


@pytest.fixture
def two_nodes(tmp_path: Path, s3_bucket: str):
    """A head and a worker node, each with a resource naming it; decodes logged to a folder."""
    import ray
    from ray.cluster_utils import Cluster

    log_dir = tmp_path / "decodes"
    log_dir.mkdir()
    os.environ[cache.DECODE_LOG_ENV] = str(log_dir)  # nodes' workers inherit it
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "resources": {"node_a": 1}})
    try:
        cluster.add_node(num_cpus=1, resources={"node_b": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        yield log_dir
    finally:
        ray.shutdown()
        cluster.shutdown()
        os.environ.pop(cache.DECODE_LOG_ENV, None)


def _both_nodes(manifest: Path, size: int, store: str, tmp_path: Path) -> list[dict]:
    import sys

    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    task = ray.remote(num_cpus=0)(_read_on_node)
    refs = [task.options(resources={node: 0.01}).remote(str(manifest), size, store,
                                                        str(tmp_path / f"local-{node}"), 16)
            for node in ("node_a", "node_b")]
    return ray.get(refs)


def test_decoded_once_across_two_nodes(two_nodes: Path, s3_bucket: str, tmp_path: Path) -> None:
    from raybench.config import DataConfig
    from raybench.data.importers import import_dataset, write_import
    from raybench.data.dataset import warm_decoded_cache

    log_dir = two_nodes
    root = _films(tmp_path / "films")
    manifest = tmp_path / "m.parquet"
    write_import(import_dataset("folder", root), manifest)
    store = f"s3://{s3_bucket}/cache"

    # Two nodes' trials race for a missing entry (6 shards): the claims split the work.
    raced = _both_nodes(manifest, 32, store, tmp_path)
    assert _decodes(log_dir) == N
    assert any(r["built"] for r in raced)
    assert np.array_equal(raced[0]["images"], raced[1]["images"])
    assert raced[0]["local"][0].startswith(str(tmp_path / "local-node_a"))
    assert raced[1]["local"][0].startswith(str(tmp_path / "local-node_b"))

    # The sweep's start-up: the driver builds the entry over both nodes, trials only read it.
    cfg = DataConfig(manifest=str(manifest), cache_dir=store, labels=("normal", "viral",
                     "bacteria"), local_cache_dir=str(tmp_path / "driver"))
    cache.SHARD_ROWS, before = 16, cache.SHARD_ROWS
    try:
        assert warm_decoded_cache([(cfg, 24), (cfg, 24)]) == 1
    finally:
        cache.SHARD_ROWS = before
    assert _decodes(log_dir) == 2 * N
    read = _both_nodes(manifest, 24, store, tmp_path)
    assert _decodes(log_dir) == 2 * N and not any(r["built"] for r in read)
    assert np.array_equal(read[0]["images"], read[1]["images"])
    assert np.array_equal(read[0]["images"][7], cache.decode_image(
        root / import_dataset("folder", root).df[S.PATH][7], 24))
