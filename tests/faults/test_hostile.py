"""Hostile inputs (issue 13): one line on stderr, exit code 2, within seconds, nothing written.

Every case asserts the exit code, the one line (what, where, what is allowed), a time bound and
that nothing was written. Network cases talk to a real TCP server on 127.0.0.1 that accepts
connections and never answers.
"""
from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.helpers.resultdata import FOUR, write_scenario2

from raybench import storage
from raybench.data.images import MAX_IMAGE_PIXELS
from raybench.data.synth import synthesize
from raybench.store import CamSet, ResultStore

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "model.image_size=32", "--set", "train.epochs=1", "--set", "train.batch_size=4"]


def _one_line(code: int, err: str, match: str) -> str:
    lines = [ln for ln in err.splitlines() if not ln.startswith(("INFO ", "WARNING ", "DEBUG "))]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("raybench: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in err
    return lines[0]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")) if root.exists() else []


# --- spec validation ---------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

SPEC_CASES = [
    ("nan-lr", ["--set", "train.lr=.nan"], r"train\.lr must be a finite number, got nan"),
    ("inf-string", ["--set", "train.lr=inf"], r"train\.lr must be a finite number"),
    ("inf-budget", ["--set", "sweep.time_budget_s=.inf"], r"sweep\.time_budget_s must be a finite"),
    ("negative-seed", ["--set", "train.seed=-1"], r"train\.seed must be >= 0, got -1"),
    ("negative-split-seed", ["--set", "data.split_seed=-3"], r"data\.split_seed must be >= 0"),
    ("negative-sweep-seed", ["--set", "sweep.seeds=[0, -2]"], r"sweep\.seeds must be >= 0, got -2"),
    ("negative-weight-decay", ["--set", "train.weight_decay=-0.1"], r"train\.weight_decay must be >= 0"),
    ("zero-threads", ["--set", "train.num_threads=0"], r"train\.num_threads must be >= 1"),
    ("huge-image", ["--set", "model.image_size=4096"], r"model\.image_size must be in \[16, 1024\] px"),
    ("huge-synthetic", ["--set", "data.synthetic.size=5000"], r"data\.synthetic\.size must be in \[1, 1024\]"),
    ("duplicate-model", ["--set", "sweep.models=[cnnx, resnet18, cnnx]"], r"sweep\.models lists 'cnnx' twice"),
    ("empty-model", ["--set", "sweep.models=[cnnx, '']"], r"sweep\.models\[1\] is empty"),
    ("no-models", ["--set", "sweep.models=[]"], r"sweep\.models must list at least one model"),
    ("duplicate-seed", ["--set", "sweep.seeds=[1, 1]"], r"sweep\.seeds lists 1 twice"),
    ("duplicate-scenario", ["--set", "sweep.scenarios=[paper-1, paper-1]"], r"sweep\.scenarios lists 'paper-1' twice"),
    ("unknown-sweep-scenario", ["--set", "sweep.scenarios=[paper-1, paper-7]"],
     r"sweep\.scenarios\[1\]: unknown scenario 'paper_7'.*valid: paper_1"),
    ("duplicate-label", ["--set", "data.labels=[normal, covid19, normal]"], r"data\.labels lists 'normal' twice"),
    ("empty-label", ["--set", "data.labels=[normal, ' ']"], r"data\.labels\[1\] is empty"),
    ("duplicate-roi", ["--set", "sweep.rois=[full, full]"], r"sweep\.rois lists 'full' twice"),
    ("long-value", ["--set", "train.epochs=" + "x" * 5000], r"train\.epochs must be int, got 'x{50,60}\.\.\. \(5002 chars\)$"),
]


@pytest.mark.parametrize("args,match", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_spec_gap_is_one_line(tmp_path: Path, run_cli, args: list[str], match: str) -> None:
    start = time.monotonic()
    code, _, err = run_cli("train", *args, "--results", str(tmp_path / "runs"))
    _one_line(code, err, match)
    assert time.monotonic() - start < 5
    assert not (tmp_path / "runs").exists()


YAML_CASES = [
    ("duplicate-key", "name: a\ntrain:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n",
     r"spec\.yaml: line 5: duplicate key 'lr' \(first on line 3\)"),
    ("duplicate-section", "train: {lr: 0.1}\nmodel: {name: cnnx}\ntrain: {epochs: 1}\n",
     r"line 3: duplicate key 'train' \(first on line 1\)"),
    ("alias-bomb", BOMB, r"aliases expand to over 100,000 nodes"),
    ("recursive-alias", "a: &a [1, *a]\n", r"recursive alias"),
    ("oversized", "name: a\n" + "# padding\n" * 120_000, r"bytes; a spec is at most 1,048,576"),
    ("not-utf8", "name: \udcff\n", r"not UTF-8 text"),
]


@pytest.mark.parametrize("text,match", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_hostile_yaml_is_one_line_in_seconds(tmp_path: Path, run_cli, text: str, match: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    start = time.monotonic()
    code, _, err = run_cli("train", "--config", str(path), "--results", str(tmp_path / "runs"))
    _one_line(code, err, match)
    assert time.monotonic() - start < 5, "an alias bomb must not be expanded"
    assert not (tmp_path / "runs").exists()


def test_alias_bomb_sizes_are_counted_not_expanded() -> None:
    """The bomb above is real (9 levels of 9 aliases: 9**9 leaves); sizes are memoised."""
    import yaml

    from raybench.safeyaml import MAX_NODES, _expanded_size

    node = yaml.compose(BOMB, Loader=yaml.SafeLoader)
    values = [v for _, v in node.value]
    assert _expanded_size(values[0], {}, set()) == 10  # 'a': one list of 9 scalars
    assert _expanded_size(values[1], {}, set()) == 1 + 9 * 10
    assert _expanded_size(values[4], {}, set()) == sum(9 ** k for k in range(6))  # 66,430
    start = time.monotonic()
    assert _expanded_size(values[8], {}, set()) > MAX_NODES
    assert time.monotonic() - start < 1


def test_num_cpus_below_one_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from raybench.cli import main

    with pytest.raises(SystemExit) as exit_info:  # argparse exits itself
        main(["sweep", "--config", str(REPO / "jobs" / "smoke.yaml"), "--num-cpus", "0",
              "--results", str(tmp_path / "runs")])
    _one_line(int(exit_info.value.code), capsys.readouterr().err, r"argument --num-cpus: must be >= 1, got 0")
    assert not (tmp_path / "runs").exists()


def test_spec_error_costs_under_2s_without_torch_or_ray(tmp_path: Path) -> None:
    """A rejected spec never imports torch or Ray (they cost about 8 s on this machine)."""
    code = ("import sys, time; t = time.perf_counter(); from raybench.cli import main; "
            "rc = main(['sweep', '--config', sys.argv[1], '--set', 'train.lr=-1']); "
            "print(rc, 'torch' in sys.modules, 'ray' in sys.modules, time.perf_counter() - t)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, str(REPO / "jobs" / "smoke.yaml")],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    wall = time.monotonic() - start
    rc, torch_loaded, ray_loaded, seconds = proc.stdout.split()
    assert (rc, torch_loaded, ray_loaded) == ("2", "False", "False"), proc.stderr
    assert "train.lr must be > 0, got -1.0" in proc.stderr
    # The target is < 2 s on an idle machine; the bound leaves headroom for 6 engineers on 2 cores.
    assert float(seconds) < 6 and wall < 12, (seconds, wall)


def test_model_names_are_the_table_keys() -> None:
    from raybench.models import MODELS
    from raybench.models.cnnx import pooled_size
    from raybench.models.names import MODEL_NAMES, cnnx_pooled_size

    assert MODEL_NAMES == tuple(MODELS.keys()) and len(MODEL_NAMES) == 13
    assert pooled_size is cnnx_pooled_size and cnnx_pooled_size(224, 3) == 75


# --- hostile images ----------------------------------------------------------------------------

def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` 8-bit gray pixels but holds a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_decompression_bomb_at_import_is_one_line(tmp_path: Path, run_cli) -> None:
    synthesize(tmp_path / "d", per_class=2, size=32, seed=0)
    bomb = tmp_path / "d" / "images" / "viral" / "viral_0000.png"
    bomb.write_bytes(_png_header_only(30_000, 30_000))
    assert 30_000 ** 2 > MAX_IMAGE_PIXELS and bomb.stat().st_size < 200
    out = tmp_path / "runs" / "m.parquet"
    start = time.monotonic()
    code, _, err = run_cli("data", "import", "folder", str(tmp_path / "d" / "images"), "--out", str(out))
    _one_line(code, err, r"viral_0000\.png: image of 900,000,000 pixels exceeds the limit of "
                         r"67,108,864 \(a decompression bomb\?\)$")
    assert time.monotonic() - start < 10
    assert not out.exists() and not out.parent.exists()


def test_decompression_bomb_is_skipped_and_recorded_in_training(tmp_path: Path, run_cli) -> None:
    synthesize(tmp_path / "d", per_class=4, size=32, seed=0)
    (tmp_path / "d" / "images" / "viral" / "viral_0000.png").write_bytes(_png_header_only(20_000, 9_000))
    code, _, err = run_cli("train", *TINY, "--set", f"data.manifest={tmp_path / 'd' / 'manifest.parquet'}",
                           "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.on_bad_image=skip",
                           "--set", "cam.enabled=false", "--results", str(tmp_path / "runs"))
    assert code == 0, err
    runs = pd.read_parquet(tmp_path / "runs" / "train" / "runs")
    skipped = json.loads(runs.loc[0, "skipped_images"])
    assert [Path(s["path"]).name for s in skipped] == ["viral_0000.png"]
    assert "180,000,000 pixels exceeds the limit" in skipped[0]["reason"]


def test_folder_import_refuses_a_symlink_leaving_the_root(tmp_path: Path, run_cli) -> None:
    synthesize(tmp_path / "d", per_class=2, size=32, seed=0)
    outside = tmp_path / "outside.png"
    outside.write_bytes((tmp_path / "d" / "images" / "normal" / "normal_0000.png").read_bytes())
    os.symlink(outside, tmp_path / "d" / "images" / "normal" / "link.png")
    out = tmp_path / "runs" / "m.parquet"
    code, _, err = run_cli("data", "import", "folder", str(tmp_path / "d" / "images"), "--out", str(out))
    _one_line(code, err, r"link\.png escapes the dataset root .*images must stay inside it|"
                         r"link\.png escapes the dataset root")
    assert not out.exists()


# --- network deadlines -------------------------------------------------------------------------

@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True, name="silent-server").start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("op", ["--status", "--logs", "--stop"])
def test_jobs_api_that_never_answers_is_one_line(silent_server: int, run_cli, op: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYBENCH_HTTP_TIMEOUT_S", "1")
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    start = time.monotonic()
    code, _, err = run_cli("submit", op, "raybench-x-1", "--address", f"http://127.0.0.1:{silent_server}")
    _one_line(code, err, rf"Ray Jobs API at http://127.0.0.1:{silent_server}: no answer within 1 s")
    assert time.monotonic() - start < 8


def test_submit_to_a_silent_server_is_one_line(silent_server: int, run_cli, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYBENCH_HTTP_TIMEOUT_S", "1")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    start = time.monotonic()
    code, out, err = run_cli("submit", "--config", str(REPO / "jobs" / "smoke.yaml"), "--wait",
                             "--results", str(tmp_path / "runs"),
                             "--address", f"http://127.0.0.1:{silent_server}")
    _one_line(code, err, r"no answer within 1 s")
    assert out == "" and time.monotonic() - start < 8


def test_bad_http_timeout_variable_is_one_line(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYBENCH_HTTP_TIMEOUT_S", "soon")
    code, _, err = run_cli("submit", "--status", "j", "--address", "http://127.0.0.1:1")
    _one_line(code, err, r"RAYBENCH_HTTP_TIMEOUT_S='soon': expected seconds > 0")


@pytest.mark.s3
def test_s3_endpoint_that_never_answers_is_one_line(silent_server: int, run_cli, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rbtestkey")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rb-test-secret-0123456789")
    uri = f"s3://bucket/x?endpoint_override=http://127.0.0.1:{silent_server}"
    for args, bound in ((["results", uri], 20), (["train", "--results", uri], 15)):
        start = time.monotonic()
        code, _, err = run_cli(*args)
        line = _one_line(code, err, rf"endpoint http://127.0.0.1:{silent_server} is unreachable"
                                    r"|no answer within")
        assert time.monotonic() - start < bound, args
        assert "rb-test-secret" not in line


# --- corrupt result files ----------------------------------------------------------------------

def _root(tmp_path: Path, cams: bool = False) -> Path:
    store = ResultStore(str(tmp_path / "runs"))
    write_scenario2(store)
    if cams:
        rng = np.random.default_rng(0)
        ids = ["img000", "img010", "img020", "img030"]
        store.write_cams("s2", "cnnx-seed0", CamSet(
            image_ids=ids, labels=list(FOUR), predicted=list(FOUR), cams=rng.random((4, 7, 7)),
            method="cam", target_layer="features", input_size=32,
            images=rng.integers(0, 255, (4, 32, 32), dtype=np.uint8)))
    return tmp_path / "runs"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign(path: Path) -> None:
    pq.write_table(pa.table({"patient": ["p1"], "age": [3]}), path)


@pytest.mark.parametrize("damage,reason", [(_truncate, r"not a readable Parquet file \(Parquet magic bytes"),
                                           (_foreign, r"not a raybench table \(no sweep, trial_id column\)")],
                         ids=["truncated", "foreign"])
def test_corrupt_parquet_is_named_with_the_fix(tmp_path: Path, run_cli, damage, reason: str) -> None:
    root = _root(tmp_path)
    bad = root / "s2" / "metrics" / "resnet18-seed1.parquet"
    damage(bad)
    start = time.monotonic()
    code, out, err = run_cli("results", str(root), "--table", "metrics")
    line = _one_line(code, err, rf"corrupt result file {re.escape(str(bad))}: {reason}")
    assert "remove it and resume the sweep" in line and "--skip-corrupt" in line
    assert out == "" and time.monotonic() - start < 5
    code, _, err = run_cli("report", str(root), "--sweep", "s2", "--out", str(tmp_path / "rep"))
    _one_line(code, err, rf"corrupt result file {re.escape(str(bad))}")
    assert not (tmp_path / "rep").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_skip_corrupt_leaves_the_file_out_with_a_warning(tmp_path: Path, run_cli,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from raybench.results import load

    root = _root(tmp_path)
    bad = root / "s2" / "metrics" / "resnet18-seed1.parquet"
    _truncate(bad)
    code, out, err = run_cli("results", str(root), "--table", "metrics", "--format", "csv", "--skip-corrupt")
    assert code == 0, err
    assert f"skipping corrupt result file {bad}: not a readable Parquet file" in caplog.text
    frame = pd.read_csv(__import__("io").StringIO(out))
    assert sorted(frame["trial_id"].unique()) == ["cnnx-seed0", "cnnx-seed1", "resnet18-seed0"]
    res = load(str(root), "s2", skip_corrupt=True)
    assert res.metrics["trial_id"].nunique() == 3 and res.store.skipped == [str(bad)]
    assert len(res.runs) == 4
    code, _, err = run_cli("report", str(root), "--sweep", "s2", "--out", str(tmp_path / "rep"), "--skip-corrupt")
    assert code == 0, err
    assert (tmp_path / "rep" / "report.html").is_file()


def test_results_load_names_the_corrupt_file(tmp_path: Path) -> None:
    from raybench.results import load
    from raybench.store import CorruptResultError

    root = _root(tmp_path)
    bad = root / "s2" / "runs" / "cnnx-seed1.parquet"
    bad.write_bytes(b"PAR1 not really PAR1")
    with pytest.raises(CorruptResultError, match=re.escape(str(bad))) as info:
        load(str(root)).runs
    assert info.value.uri == str(bad)


def test_copied_trial_file_is_foreign(tmp_path: Path, run_cli) -> None:
    root = _root(tmp_path)
    runs = root / "s2" / "runs"
    (runs / "cnnx-seed9.parquet").write_bytes((runs / "cnnx-seed0.parquet").read_bytes())
    code, _, err = run_cli("results", str(root))
    _one_line(code, err, r"cnnx-seed9\.parquet: holds rows of trial\(s\) \['cnnx-seed0'\], not 'cnnx-seed9'")


def test_corrupt_snapshot_is_ignored_and_the_trial_files_read(tmp_path: Path, run_cli,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from raybench.results import load

    root = _root(tmp_path)
    exact = load(str(root), "s2").metrics.sort_values(["trial_id", "class", "metric"]).reset_index(drop=True)
    load(str(root), "s2", compact=True)
    _truncate(root / "s2" / "_compact" / "metrics.parquet")
    code, _, err = run_cli("results", str(root), "--table", "metrics")
    assert code == 0, err
    assert "ignoring the load snapshot" in caplog.text
    again = load(str(root), "s2").metrics.sort_values(["trial_id", "class", "metric"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(again, exact)


def test_corrupt_cam_file_is_named(tmp_path: Path, run_cli, caplog: pytest.LogCaptureFixture) -> None:
    root = _root(tmp_path, cams=True)
    bad = root / "s2" / "cams" / "cnnx-seed0.npz"
    _truncate(bad)
    out = tmp_path / "png"
    code, _, err = run_cli("cam", str(root), "--sweep", "s2", "--trial", "cnnx-seed0", "--out", str(out))
    _one_line(code, err, rf"corrupt result file {re.escape(str(bad))}: not a readable CAM file")
    assert not out.exists()
    code, _, err = run_cli("cam", str(root), "--sweep", "s2", "--trial", "cnnx-seed0", "--out", str(out),
                           "--skip-corrupt")
    assert code == 0 and "no overlays written" in caplog.text and not out.exists()
    code, _, err = run_cli("report", str(root), "--sweep", "s2", "--out", str(tmp_path / "rep"))
    _one_line(code, err, r"not a readable CAM file")
    code, _, err = run_cli("report", str(root), "--sweep", "s2", "--out", str(tmp_path / "rep"), "--skip-corrupt")
    assert code == 0, err
    assert "Class activation maps" not in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize("which", ["file", "sweep-folder", "cam-file"])
def test_results_path_mistakes_are_one_line(tmp_path: Path, run_cli, which: str) -> None:
    root = _root(tmp_path)
    uri, match = {
        "file": (root / "s2" / "runs" / "cnnx-seed0.parquet", r"is a file, not a results root"),
        "sweep-folder": (root / "s2", rf"is a sweep's folder, not a results root: pass {re.escape(str(root))} "
                                      r"with --sweep s2"),
        "cam-file": (root / "s2" / "spec.yaml", r"is a file, not a results root"),
    }[which]
    if which == "cam-file":
        uri.write_text("name: s2\n")
    command = ["cam", str(uri), "--sweep", "s2", "--trial", "t", "--out", str(tmp_path / "png")] \
        if which == "cam-file" else ["results", str(uri)]
    code, _, err = run_cli(*command)
    _one_line(code, err, match)


# --- report, train, file modes -----------------------------------------------------------------

def test_failed_report_leaves_the_previous_report(tmp_path: Path, run_cli) -> None:
    root = _root(tmp_path)
    out = tmp_path / "rep"
    code, _, err = run_cli("report", str(root), "--sweep", "s2", "--out", str(out))
    assert code == 0, err
    (out / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _truncate(root / "s2" / "epochs" / "cnnx-seed0.parquet")
    code, _, err = run_cli("report", str(root), "--sweep", "s2", "--out", str(out))
    _one_line(code, err, r"corrupt result file .*epochs/cnnx-seed0\.parquet")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "runs"], "no temporary folder left"
    code, _, err = run_cli("report", str(root), "--sweep", "s2", "--out", str(out), "--skip-corrupt")
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine" and (out / "figures").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "runs"]


def _interrupting_fit(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("previous", [None, "name: train\nmodel: {name: resnet18}\n"])
def test_interrupted_train_restores_the_previous_spec(tmp_path: Path, run_cli, previous,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import raybench.engine.run as run

    synthesize(tmp_path / "d", per_class=4, size=32, seed=0)
    sweep = tmp_path / "runs" / "train"
    if previous:
        sweep.mkdir(parents=True)
        (sweep / "spec.yaml").write_text(previous)
    seen: list[str] = []

    def fit(*args, **kwargs):
        seen.append((sweep / "spec.yaml").read_text())  # the run's spec while it runs
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "fit", fit)
    code, _, err = run_cli("train", *TINY, "--set", f"data.manifest={tmp_path / 'd' / 'manifest.parquet'}",
                           "--set", f"data.cache_dir={tmp_path / 'cache'}", "--results", str(tmp_path / "runs"))
    assert code == 130 and "raybench: interrupted" in err
    assert len(seen) == 1 and "image_size: 32" in seen[0]
    if previous:
        assert (sweep / "spec.yaml").read_text() == previous
        assert sorted(p.name for p in sweep.iterdir()) == ["spec.yaml"]
    else:
        assert not sweep.exists(), "a failed run claims no sweep name"


def test_rejected_train_writes_no_spec(tmp_path: Path, run_cli) -> None:
    synthesize(tmp_path / "d", per_class=4, size=32, seed=0)
    code, _, err = run_cli("train", *TINY, "--set", f"data.manifest={tmp_path / 'd' / 'manifest.parquet'}",
                           "--set", "train.batch_size=500", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                           "--results", str(tmp_path / "runs"))
    _one_line(code, err, r"larger than the training split")
    assert not (tmp_path / "runs" / "train").exists()


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_result_files_follow_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    old = os.umask(mask)
    try:
        assert storage.current_umask() == mask
        store = ResultStore(str(tmp_path / "runs"))
        write_scenario2(store)
        store.compact("s2")
        store.write_spec("s2", "name: s2\n")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert len(files) == 4 * 4 + 4 + 1
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}
