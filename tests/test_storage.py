"""storage.py and store.py on local disk: URIs, atomic writes, fail-fast check, snapshots, CAMs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest

from raybench import schema as S
from raybench import storage
from raybench.camset import CamSet
from raybench.errors import RaybenchError
from raybench.store import ResultStore
from tests.helpers.resultdata import FOUR, write_scenario2, write_trial

REPO = Path(__file__).resolve().parents[1]


def test_resolve_local_file_and_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loc = storage.resolve(tmp_path / "runs")
    assert loc.is_local and loc.path == str(tmp_path / "runs")
    assert storage.resolve(f"file://{tmp_path}/runs").path == str(tmp_path / "runs")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3 = storage.resolve("s3://bucket/some/prefix/?endpoint_override=http://127.0.0.1:9000")
    assert s3.path == "bucket/some/prefix" and not s3.is_local
    assert isinstance(s3.fs, pafs.S3FileSystem)
    assert s3.join("sweep", "runs").path == "bucket/some/prefix/sweep/runs"
    assert isinstance(storage.resolve(tmp_path / "runs").fs, pafs.LocalFileSystem)


def test_credentials_never_come_from_or_leak_through_a_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RaybenchError) as info:
        storage.resolve("s3://bucket/p?secret_key=TOPSECRET123&region=eu-west-1")
    assert "TOPSECRET123" not in str(info.value) and "'secret_key'" in str(info.value)
    with pytest.raises(RaybenchError, match="must not hold credentials") as info:
        storage.resolve("s3://AKIA1:TOPSECRET456@bucket/p")
    assert "TOPSECRET456" not in str(info.value)
    with pytest.raises(RaybenchError, match="unsupported storage scheme 'gs'"):
        storage.resolve("gs://bucket/p")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "abcdSECRETxyz")
    assert storage.redact("failed with key abcdSECRETxyz!") == "failed with key ***!"
    assert storage.redact("secret_key=foo&x=1") == "secret_key=***&x=1"


def test_atomic_writer_exception_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    loc = storage.resolve(tmp_path / "t" / "a.bin")
    storage.write_bytes_atomic(loc, b"old")
    with pytest.raises(RuntimeError, match="injected"):
        with storage.atomic_writer(loc) as handle:
            handle.write(b"new-partial" * 1000)
            raise RuntimeError("injected failure mid-stream")
    assert (tmp_path / "t" / "a.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path / "t") == ["a.bin"]


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from raybench import storage
    loc = storage.resolve(sys.argv[1])
    with storage.atomic_writer(loc) as handle:
        for i in range(10_000):
            handle.write(b"x" * 65536)
            if i == 5:
                print("writing", flush=True)
            time.sleep(0.01)
""")


def kill_writer_midway(target: str, env: dict[str, str] | None = None) -> None:
    """Starts a slow writer of ``target`` and SIGKILLs it once it has written some chunks."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, target], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.2)
        assert proc.poll() is None, "the writer finished before it could be killed"
        proc.kill()
    finally:
        proc.wait(10)
    assert proc.returncode == -9


def test_killed_writer_leaves_no_readable_partial_file(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    write_scenario2(store)
    target = tmp_path / "s2" / "metrics" / "cnnx-seed0.parquet"
    before = target.read_bytes()
    kill_writer_midway(str(target))
    assert target.read_bytes() == before  # the old complete file, not a part
    leftovers = [p for p in os.listdir(target.parent) if p.startswith(".tmp-")]
    assert len(leftovers) == 1  # the killed writer's hidden temp file; readers skip it
    assert len(pd.read_parquet(target.parent)) == 4 * 24
    assert len(store.read_table("s2", "metrics")) == 4 * 24
    kill_writer_midway(str(tmp_path / "s2" / "metrics" / "new-trial.parquet"))
    assert not (tmp_path / "s2" / "metrics" / "new-trial.parquet").exists()


def test_check_writable_local(tmp_path: Path) -> None:
    assert storage.check_writable(tmp_path / "not" / "yet").path == str(tmp_path / "not" / "yet")
    assert not (tmp_path / "not").exists()  # the check creates nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(RaybenchError, match="is not a folder"):
        storage.check_writable(tmp_path / "file" / "runs")


def test_rerun_replaces_rows_and_snapshot_tracks_changes(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    write_scenario2(store)
    assert store.compact("s2") == {"runs": 4, "metrics": 4, "epochs": 4, "predictions": 4}
    assert (tmp_path / "s2" / "_compact" / "metrics.parquet").is_file()
    # Rerun one trial with other results, add one, delete one: reads see exactly that.
    write_trial(store, "s2", "cnnx-seed0", model="cnnx", seed=0, scenario="scenario2",
                labels=FOUR, n=10, correct=dict.fromkeys(FOUR, 3), epochs=2)
    write_trial(store, "s2", "cnnx-seed2", model="cnnx", seed=2, scenario="scenario2",
                labels=FOUR, n=10, correct=dict.fromkeys(FOUR, 10))
    for table in ("runs", "metrics", "epochs", "predictions"):
        (tmp_path / "s2" / table / "resnet18-seed1.parquet").unlink()
    runs = store.read_table("s2", "runs")
    assert sorted(runs["trial_id"]) == ["cnnx-seed0", "cnnx-seed1", "cnnx-seed2", "resnet18-seed0"]
    epochs = store.read_table("s2", "epochs")
    assert epochs.query("trial_id == 'cnnx-seed0'")["epoch"].tolist() == [1, 2]
    metrics = store.read_table("s2", "metrics")
    sens = metrics.query("trial_id == 'cnnx-seed0' and metric == 'sensitivity'")["value"]
    assert sens.tolist() == [0.3, 0.3, 0.3, 0.3]
    direct = pd.read_parquet(tmp_path / "s2" / "metrics")  # without raybench or snapshot
    key = ["trial_id", "class", "metric"]
    pd.testing.assert_frame_equal(
        metrics.sort_values(key).reset_index(drop=True),
        direct.sort_values(key).reset_index(drop=True), check_dtype=False)


def test_trial_rows_read_one_trial_file_and_name_a_cut_short_one(tmp_path: Path) -> None:
    from raybench.store import CorruptResultError

    store = ResultStore(str(tmp_path))
    write_trial(store, "s2", "cnnx-seed0", model="cnnx", seed=0, scenario="scenario2",
                labels=FOUR, n=10, correct=dict.fromkeys(FOUR, 3), epochs=3)
    epochs = store.trial_rows("s2", S.EPOCHS_TABLE, "cnnx-seed0")
    assert [r[S.EPOCH] for r in epochs or []] == [1, 2, 3]
    assert store.trial_row("s2", S.RUNS_TABLE, "cnnx-seed0")[S.SEED] == 0
    assert store.trial_rows("s2", S.RUNS_TABLE, "no-such-trial") is None
    store.delete_trial_file("s2", S.EPOCHS_TABLE, "cnnx-seed0")
    assert store.trial_rows("s2", S.EPOCHS_TABLE, "cnnx-seed0") is None
    run = tmp_path / "s2" / S.RUNS_TABLE / "cnnx-seed0.parquet"
    run.write_bytes(run.read_bytes()[:40])  # a crash cut it short
    with pytest.raises(CorruptResultError, match=f"corrupt result file {run}: not a readable"):
        store.trial_rows("s2", S.RUNS_TABLE, "cnnx-seed0")
    assert store.trial_row("s2", S.RUNS_TABLE, "cnnx-seed0") is None


def test_cam_npz_round_trip_and_validation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cams = CamSet(image_ids=["a", "b"], labels=["normal", "covid19"],
                  predicted=["normal", "viral"], cams=rng.random((2, 7, 7)), method="gradcam",
                  target_layer="layer4", input_size=224,
                  images=rng.integers(0, 255, (2, 32, 32), dtype=np.uint8))
    store = ResultStore(str(tmp_path))
    store.write_cams("sw", "t1", cams)
    back = store.read_cams("sw", "t1")
    assert back.cams.dtype == np.float16 and back.cams.shape == (2, 7, 7)
    np.testing.assert_array_equal(back.cams, cams.cams)
    assert back.image_ids.tolist() == ["a", "b"] and back.predicted.tolist() == ["normal", "viral"]
    assert (back.method, back.target_layer, back.input_size) == ("gradcam", "layer4", (224, 224))
    np.testing.assert_array_equal(back.images, cams.images)
    assert store.cam_trials("sw") == ["t1"]
    with np.load(tmp_path / "sw" / "cams" / "t1.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"image_ids", "labels", "predicted", "cams", "method",
                                  "target_layer", "input_size", "images"}
    with pytest.raises(ValueError, match="labels must have shape"):
        CamSet(image_ids=["a"], labels=["x", "y"], predicted=["x"], cams=np.zeros((1, 2, 2)),
               method="cam", target_layer="l", input_size=(8, 8))
    with pytest.raises(RaybenchError, match="no CAMs for trial 'nope'"):
        store.read_cams("sw", "nope")


def test_write_table_rejects_a_misspelt_and_a_missing_column(tmp_path: Path) -> None:
    """A typo'd key fails loudly (it used to vanish) and a row without a required column too."""
    from raybench.store import ResultSchemaError

    store = ResultStore(str(tmp_path))
    row = {S.MODEL: "cnnx", S.SCENARIO: "scenario2", S.SEED: 0, S.STATUS: "completed"}
    with pytest.raises(ResultSchemaError) as typo:
        store.write_table("sw", "runs", "t1", [{**row, "lrr": 1e-3}])
    assert str(typo.value) == "runs row of trial t1: unknown column 'lrr' (did you mean 'lr'?)"
    with pytest.raises(ResultSchemaError) as absent:
        store.write_table("sw", "metrics", "t2", [{S.SPLIT: "test", S.CLASS: "all",
                                                   S.METRIC: "accuracy"}])
    assert str(absent.value) == "metrics row of trial t2: missing required column(s) 'value'"
    preds = pd.DataFrame({S.SPLIT: ["test"], S.IMAGE_ID: ["a"], S.LABEL: ["normal"],
                          S.PREDICTED: ["normal"], "p_normal": [1.0]})
    with pytest.raises(ResultSchemaError, match="predictions row of trial t3: missing required "
                                                "column.s. 'p_viral'"):
        store.write_table("sw", "predictions", "t3", preds, S.predictions_schema(["normal",
                                                                                   "viral"]))
    assert not (tmp_path / "sw").exists()  # nothing written
    store.write_table("sw", "runs", "t1", [row])  # optional columns absent: null
    runs = store.read_table("sw", "runs")
    assert runs.loc[0, S.TRIAL_ID] == "t1" and pd.isna(runs.loc[0, S.LR])
