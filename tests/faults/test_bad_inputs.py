"""The bad-input matrix: every case is one line on stderr, exit code 2, nothing half-written."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests

from raybench.data.synth import synthesize

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "model.image_size=32", "--set", "train.epochs=1", "--set", "train.batch_size=4"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset(tmp: Path) -> Path:
    synthesize(tmp / "d", per_class=4, size=32, seed=0)
    return tmp / "d" / "manifest.parquet"


def _train(tmp: Path, *extra: str) -> list[str]:
    return ["train", *TINY, "--set", f"data.cache_dir={tmp / 'cache'}",
            "--results", str(tmp / "runs"), *extra]


def _with_manifest(tmp: Path, *extra: str) -> list[str]:
    return _train(tmp, "--set", f"data.manifest={_dataset(tmp)}", *extra)


def _damage(how: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        args = _with_manifest(tmp)
        image = sorted((tmp / "d" / "images" / "viral").glob("*.png"))[0]
        data = image.read_bytes()
        image.write_bytes({"corrupt": b"\x89PNG not really", "zero": b"",
                           "truncated": data[: len(data) // 2]}[how])
        return args
    return setup


def _edit_manifest(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        args = _with_manifest(tmp)
        path = tmp / "d" / "manifest.parquet"
        table = pq.read_table(path)
        pq.write_table(pq.read_table(path).from_pandas(edit(table.to_pandas()),
                                                       preserve_index=False), path)
        return args
    return setup


def _spec_file(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "spec.yaml").write_text(text)
        return _train(tmp, "--config", str(tmp / "spec.yaml"))
    return setup


def _set(*items: str) -> Callable[[Path], list[str]]:
    return lambda tmp: _train(tmp, *[a for item in items for a in ("--set", item)])


def _empty_class(tmp: Path) -> list[str]:
    synthesize(tmp / "d", per_class=2, size=32, seed=0)
    for f in (tmp / "d" / "images" / "covid19").iterdir():
        f.unlink()
    return ["data", "import", "folder", str(tmp / "d" / "images"), "--out", str(tmp / "runs" / "m.parquet")]


def _s3(uri: Callable[[Path, str], str]) -> Callable[..., list[str]]:
    def setup(tmp: Path, bucket: str) -> list[str]:
        return _train(tmp, "--results", uri(tmp, bucket))
    return setup


def _existing_sweep(tmp: Path) -> list[str]:
    (tmp / "runs" / "smoke").mkdir(parents=True)
    (tmp / "runs" / "smoke" / "spec.yaml").write_text("name: smoke\n")
    return ["sweep", "--config", str(REPO / "jobs" / "smoke.yaml"), "--results", str(tmp / "runs")]


def _not_writable(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return _train(tmp, "--results", str(tmp / "afile" / "runs"))


CASES = [
    ("yaml-syntax", _spec_file("train:\n  lr: [1\n  epochs: 2\n"), r"line \d+: YAML syntax error"),
    ("unknown-key", _spec_file("train: {lrr: 0.1}\n"), "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    ("wrong-type", _set("train.epochs=three"), "train.epochs must be int, got 'three'"),
    ("bad-set", _set("train.lr"), "expected key=value"),
    ("bad-choice", _set("data.on_bad_image=ignore"), "allowed: fail, skip"),
    ("unknown-model", _set("model.name=resnet19"), "unknown model 'resnet19' (did you mean 'resnet18'?)"),
    ("unknown-scenario", _set("data.scenario=paper-9"), "unknown scenario 'paper_9'"),
    ("cnnx-stride", _set("model.image_size=16", "model.options.stride=15"), "leaves 1x1 feature maps"),
    ("batch-too-big", lambda t: _with_manifest(t, "--set", "train.batch_size=500"), "larger than the training split"),
    ("missing-data-root", _set("data.manifest=/nonexistent/m.parquet"), "/nonexistent/m.parquet: manifest file does not exist"),
    ("empty-class", _empty_class, "covid19"),
    ("corrupt-image", _damage("corrupt"), "unreadable image"),
    ("zero-byte-image", _damage("zero"), "empty file (0 bytes)"),
    ("truncated-image", _damage("truncated"), "unreadable image"),
    ("unknown-label", _edit_manifest(lambda df: df.assign(label=df["label"].replace("viral", "pneumonitis"))),
     "label 'pneumonitis' is not allowed"),
    ("duplicate-ids", _edit_manifest(lambda df: df.assign(image_id=["same", "same"] + list(df["image_id"][2:]))),
     "'same'"),
    ("path-escapes-root", _edit_manifest(lambda df: df.assign(path=["../../etc/hosts"] + list(df["path"][1:]))),
     "../../etc/hosts"),
    ("uri-outside-root", _edit_manifest(lambda df: df.assign(path=["file:///etc/hosts"] + list(df["path"][1:]))),
     "outside the manifest's folders"),
    ("results-not-writable", _not_writable, "is not a folder"),
    ("ray-unreachable", lambda t: ["sweep", "--config", str(REPO / "jobs" / "smoke.yaml"), "--results",
                                   str(t / "runs"), "--address", f"127.0.0.1:{_closed_port()}"],
     "cannot reach Ray at 127.0.0.1:"),
    ("sweep-exists", _existing_sweep, "already exists"),
    ("resume-other-spec", lambda t: _existing_sweep(t) + ["--resume"], "started with another spec"),
    ("gpu-share-without-gpu", _set("scaling.gpus_per_worker=0.5"), "scaling.use_gpu is false"),
]
S3_CASES = [
    ("s3-missing-bucket", _s3(lambda t, b: "s3://no-such-bucket-rb/x"), "bucket 'no-such-bucket-rb' does not exist"),
    ("s3-unreachable", _s3(lambda t, b: f"s3://{b}/x?endpoint_override=http://127.0.0.1:{_closed_port()}"),
     "is unreachable"),
    ("s3-wrong-credentials", _s3(lambda t, b: f"s3://{b}/x"), "the credentials were rejected"),
]


def _assert_one_line(code: int, err: str, match: str) -> None:
    lines = [ln for ln in err.splitlines() if not ln.startswith(("INFO ", "WARNING ", "DEBUG "))]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("raybench: error: ")
    assert __import__("re").search(match, lines[0]) or match in lines[0], lines[0]
    assert "Traceback" not in err


def _written(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix in (".parquet", ".npz") and p.name != "m.parquet"
            and "d" not in p.relative_to(root).parts[:1]] if root.exists() else []


@pytest.mark.parametrize("setup,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch, setup, match: str) -> None:
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} \
        if (tmp_path / "runs").exists() else {}
    args = setup(tmp_path)
    before = before or {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    code, _, err = run_cli(*args)
    _assert_one_line(code, err, match)
    assert not _written(tmp_path / "runs"), "nothing half-written"
    after = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    assert after == before, "existing files untouched"


@pytest.mark.s3
@pytest.mark.parametrize("setup,match", [c[1:] for c in S3_CASES], ids=[c[0] for c in S3_CASES])
def test_bad_storage(tmp_path: Path, run_cli, s3_endpoint: str, s3_bucket: str, setup,
                     match: str, request: pytest.FixtureRequest) -> None:
    wrong = "wrong-credentials" in request.node.name
    if wrong:
        requests.post(f"{s3_endpoint}/moto-api/reset-auth", data="0", timeout=5).raise_for_status()
    try:
        code, _, err = run_cli(*setup(tmp_path, s3_bucket))
    finally:
        if wrong:
            requests.post(f"{s3_endpoint}/moto-api/reset-auth", data="inf", timeout=5)
    _assert_one_line(code, err, match)
    import boto3

    listed = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_objects_v2(
        Bucket=s3_bucket)
    assert listed.get("KeyCount", 0) == 0, "nothing written to the bucket"


def test_matrix_has_at_least_20_cases() -> None:
    assert len(CASES) + len(S3_CASES) >= 20


@pytest.mark.parametrize("how", ["corrupt", "zero", "truncated"])
def test_skip_policy_trains_and_records_the_skipped_image(tmp_path: Path, run_cli, how: str) -> None:
    args = _damage(how)(tmp_path) + ["--set", "data.on_bad_image=skip"]
    code, _, err = run_cli(*args)
    assert code == 0, err
    runs = pd.read_parquet(tmp_path / "runs" / "train" / "runs")
    skipped = __import__("json").loads(runs.loc[0, "skipped_images"])
    assert len(skipped) == 1 and skipped[0]["path"].endswith("viral_0000.png")
    assert skipped[0]["reason"]
    preds = pd.read_parquet(tmp_path / "runs" / "train" / "predictions")
    assert "synthetic/viral/viral_0000" not in set(preds["image_id"])
