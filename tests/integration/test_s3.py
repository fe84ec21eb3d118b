"""The results store against a real S3 API over HTTP (moto's server on 127.0.0.1).

Everything goes through the production code path: ``raybench train --results s3://...``,
ResultStore, results.load and ``raybench report``; the tests read back with pandas and a
pyarrow filesystem built here, without raybench.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import boto3
import pandas as pd
import pyarrow.fs as pafs
import pytest
import requests

from raybench import storage
from raybench.errors import RaybenchError
from raybench.results import load
from raybench.store import ResultStore
from tests.helpers.resultdata import FOUR, write_scenario2, write_trial
from tests.test_storage import kill_writer_midway

pytestmark = pytest.mark.s3

SECRET = "rb-test-secret-0123456789"  # the s3_bucket fixture's AWS_SECRET_ACCESS_KEY
TINY = ["--set", "model.image_size=32", "--set", "data.synthetic.per_class=8",
        "--set", "data.synthetic.size=32", "--set", "train.epochs=1",
        "--set", "train.batch_size=4"]


def plain_fs(endpoint: str) -> pafs.S3FileSystem:
    """A filesystem made without raybench, as a notebook user would."""
    return pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http",
                             access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=SECRET,
                             region="us-east-1")


def objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def comparable(frame: pd.DataFrame, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in drop if c in frame.columns])
    return frame.sort_values(list(frame.columns[:4])).reset_index(drop=True)


def test_train_to_s3_gives_the_same_tables_as_local(tmp_path: Path, s3_endpoint: str,
                                                    s3_bucket: str, run_cli) -> None:
    cache = ["--set", f"data.cache_dir={tmp_path / 'cache'}"]
    uri = f"s3://{s3_bucket}/team/results"
    code, out, err = run_cli("train", *TINY, *cache, "--results", uri)
    assert code == 0, err
    code, _, err = run_cli("train", *TINY, *cache, "--results", str(tmp_path / "local"))
    assert code == 0, err
    fs = plain_fs(s3_endpoint)
    timing = ("wall_s", "train_images_per_s", "seconds", "started_at", "finished_at")
    for table in ("runs", "metrics", "epochs", "predictions"):
        remote = pd.read_parquet(f"{s3_bucket}/team/results/train/{table}", filesystem=fs)
        local = pd.read_parquet(tmp_path / "local" / "train" / table)
        pd.testing.assert_frame_equal(comparable(remote, timing), comparable(local, timing),
                                      check_exact=False, rtol=1e-4)
    runs = pd.read_parquet(f"{s3_bucket}/team/results/train/runs", filesystem=fs)
    assert runs.loc[0, "trial_id"] == "cnnx-seed0" and runs.loc[0, "status"] == "completed"
    assert runs.loc[0, "epochs_run"] == 1 and runs.loc[0, "train_images_per_s"] > 0
    assert runs.loc[0, "ray_version"] and runs.loc[0, "timm_version"]

    res = load(uri, "train")
    preds = res.predictions.query("split == 'test'")  # val predictions are stored too
    acc = res.metrics.query("split == 'test' and source.isna() and `class` == 'all' and "
                            "metric == 'accuracy'")["value"].item()
    assert len(preds) == 8 and acc == pytest.approx((preds["label"] == preds["predicted"]).mean())
    assert res.paper_table().loc[("cnnx", "covid19"), "seeds"] == 1

    stored = objects(s3_endpoint, s3_bucket)
    assert sorted(k.split("/", 3)[3] for k in stored) == sorted(
        ["spec.yaml", "cams/cnnx-seed0.npz"]
        + [f"{t}/cnnx-seed0.parquet" for t in ("runs", "metrics", "epochs", "predictions")])
    assert not any(SECRET.encode() in body for body in stored.values())
    assert SECRET not in out + err

    report = tmp_path / "report"
    code, _, err = run_cli("report", uri, "--sweep", "train", "--out", str(report))
    assert code == 0, err
    page = (report / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(list((report / "figures").iterdir())) >= 3
    assert f"{acc:.4g}" in page


def test_store_round_trip_rerun_and_snapshot_on_s3(tmp_path: Path, s3_endpoint: str,
                                                   s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/r"
    write_scenario2(ResultStore(uri))
    write_scenario2(ResultStore(str(tmp_path)))
    remote, local = load(uri, "s2"), load(str(tmp_path), "s2")
    pd.testing.assert_frame_equal(remote.paper_table(), local.paper_table())
    pd.testing.assert_frame_equal(comparable(remote.metrics), comparable(local.metrics))
    store = ResultStore(uri)
    assert store.compact("s2")["predictions"] == 4
    # A rerun of a trial replaces its objects: still one row for it, with the new values.
    write_trial(store, "s2", "cnnx-seed1", model="cnnx", seed=1, scenario="scenario2",
                labels=FOUR, n=10, correct=dict.fromkeys(FOUR, 10))
    runs = load(uri, "s2").runs
    assert sorted(runs["trial_id"]) == ["cnnx-seed0", "cnnx-seed1", "resnet18-seed0",
                                        "resnet18-seed1"]
    acc = load(uri, "s2").leaderboard("accuracy").set_index("trial_id")["accuracy"]
    assert acc["cnnx-seed1"] == 1.0
    direct = pd.read_parquet(f"{s3_bucket}/r/s2/metrics", filesystem=plain_fs(s3_endpoint))
    assert len(direct) == 4 * 24  # the snapshot lives outside the table folder


def test_killed_or_failing_writer_leaves_no_partial_object(s3_endpoint: str, s3_bucket: str) -> None:
    store = ResultStore(f"s3://{s3_bucket}/k")
    write_scenario2(store)
    loc = store.location("s2", "metrics", "cnnx-seed0.parquet")
    before = storage.read_bytes(loc)
    kill_writer_midway(loc.uri, env=dict(os.environ))
    assert storage.read_bytes(loc) == before
    with pytest.raises(RuntimeError, match="injected"):
        with storage.atomic_writer(store.location("s2", "metrics", "new.parquet")) as handle:
            handle.write(b"PAR1" + b"x" * 100_000)
            raise RuntimeError("injected failure mid-stream")
    keys = objects(s3_endpoint, s3_bucket)
    assert sorted(k for k in keys if "/metrics/" in k) == [
        f"k/s2/metrics/{t}.parquet" for t in ("cnnx-seed0", "cnnx-seed1", "resnet18-seed0",
                                              "resnet18-seed1")]
    assert len(load(store.root.uri, "s2").metrics) == 4 * 24


def _train_fails_fast(run_cli, tmp_path: Path, uri: str, match: str) -> str:
    started = time.monotonic()
    code, out, err = run_cli("train", *TINY, "--set", f"data.cache_dir={tmp_path / 'cache'}",
                             "--results", uri)
    assert time.monotonic() - started < 10
    assert code == 2 and err.count("\n") == 1 and match in err, err
    assert SECRET not in out + err
    assert not (tmp_path / "cache").exists()  # failed before any data or training work
    return err


def test_missing_bucket_fails_fast(tmp_path: Path, s3_endpoint: str, s3_bucket: str,
                                   run_cli) -> None:
    err = _train_fails_fast(run_cli, tmp_path, "s3://no-such-bucket-rb/x",
                            "bucket 'no-such-bucket-rb' does not exist")
    assert err.startswith("raybench: error: results store s3://no-such-bucket-rb/x:")
    names = [b["Name"] for b in boto3.client("s3", endpoint_url=s3_endpoint,
                                             region_name="us-east-1").list_buckets()["Buckets"]]
    assert "no-such-bucket-rb" not in names


def test_unreachable_or_silent_endpoint_fails_fast(tmp_path: Path, s3_bucket: str,
                                                  monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    _train_fails_fast(run_cli, tmp_path, f"s3://{s3_bucket}/x",
                      f"endpoint http://127.0.0.1:{port} is unreachable")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        _train_fails_fast(run_cli, tmp_path, f"s3://{s3_bucket}/x?endpoint_override={endpoint}",
                          f"endpoint {endpoint} is unreachable")


def test_wrong_credentials_fail_fast_without_leaking(tmp_path: Path, s3_endpoint: str,
                                                     s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
                                                     run_cli) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY0000")
    requests.post(f"{s3_endpoint}/moto-api/reset-auth", data="0", timeout=5).raise_for_status()
    try:  # moto now checks every request's key against its (empty) IAM user list
        err = _train_fails_fast(run_cli, tmp_path, f"s3://{s3_bucket}/x",
                                "the credentials were rejected")
        with pytest.raises(RaybenchError, match="credentials were rejected"):
            storage.check_writable(f"s3://{s3_bucket}/y")
    finally:
        requests.post(f"{s3_endpoint}/moto-api/reset-auth", data="inf", timeout=5)
    assert "AKIAWRONGKEY0000" not in err
    assert objects(s3_endpoint, s3_bucket) == {}
    assert storage.check_writable(f"s3://{s3_bucket}/x").path == f"{s3_bucket}/x"
    assert objects(s3_endpoint, s3_bucket) == {}  # the check writes nothing
