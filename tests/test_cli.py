"""`raybench train` / `demo` / `data` end to end, and the one-line exit-2 error contract."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from raybench.data.synth import synthesize

REPO = Path(__file__).resolve().parents[1]


def test_train_cnnx_beats_chance_and_writes_results(tmp_path: Path, run_cli) -> None:
    """The issue's acceptance run: cnnx, 4 classes x 40 images, 64 px, 3 epochs."""
    code, out, err = run_cli(
        "train", "--config", str(REPO / "jobs" / "train-cnnx-synthetic.yaml"),
        "--set", f"data.cache_dir={tmp_path / 'cache'}", "--results", str(tmp_path / "runs"))
    assert code == 0, err
    for label in ("normal", "bacteria", "viral", "covid19"):
        assert any(line.startswith(label) for line in out.splitlines())
    sweep = tmp_path / "runs" / "cnnx-synthetic"
    assert (sweep / "spec.yaml").is_file()
    runs = pd.read_parquet(sweep / "runs")
    assert runs.loc[0, "model"] == "cnnx" and runs.loc[0, "epochs_run"] == 3
    assert runs.loc[0, "params"] == 4 * 64 * 21 * 21 + 4 + 16 * 3 * 124 + 192
    assert runs.loc[0, "status"] == "completed" and runs.loc[0, "torch_version"]
    metrics = pd.read_parquet(sweep / "metrics").query("split == 'test'")
    acc = metrics.query("`class` == 'all' and metric == 'accuracy'")["value"].item()
    assert acc >= 0.5  # chance 0.25; the held-out test split has 32 images
    sens = metrics.query("metric == 'sensitivity'")
    assert set(sens["class"]) == {"normal", "bacteria", "viral", "covid19"}
    assert sens["ci_low"].le(sens["value"]).all() and sens["ci_high"].ge(sens["value"]).all()
    epochs = pd.read_parquet(sweep / "epochs")
    assert epochs["epoch"].tolist() == [1, 2, 3]
    preds = pd.read_parquet(sweep / "predictions").query("split == 'test'")
    assert len(preds) == metrics.query("metric == 'n'")["value"].item()
    assert (preds["predicted"] == preds["label"]).mean() == pytest.approx(acc)

    # A rerun replaces the trial's files instead of adding rows.
    code, _, _ = run_cli("train", "--config", str(REPO / "jobs" / "train-cnnx-synthetic.yaml"),
                         "--set", f"data.cache_dir={tmp_path / 'cache'}",
                         "--set", "train.epochs=1", "--results", str(tmp_path / "runs"))
    assert code == 0
    assert len(pd.read_parquet(sweep / "runs")) == 1
    assert pd.read_parquet(sweep / "epochs")["epoch"].tolist() == [1]


def test_train_on_a_manifest_with_two_labels(tmp_path: Path, run_cli) -> None:
    synthesize(tmp_path / "d", per_class=12, size=32, seed=1, labels=("normal", "covid19"))
    code, out, err = run_cli(
        "train", "--set", f"data.manifest={tmp_path / 'd' / 'manifest.parquet'}",
        "--set", "data.labels=[normal, covid19]", "--set", "model.name=squeezenet",
        "--set", "model.image_size=32", "--set", "train.epochs=1", "--set", "train.batch_size=4",
        "--set", "name=two", "--results", str(tmp_path / "runs"))
    assert code == 0, err
    preds = pd.read_parquet(tmp_path / "runs" / "two" / "predictions")
    assert {"p_normal", "p_covid19"} <= set(preds.columns) and "p_viral" not in preds.columns


@pytest.mark.parametrize("args,match", [
    (["train", "--set", "model.name=resnet19"], "unknown model 'resnet19' (did you mean 'resnet18'?)"),
    (["train", "--set", "train.lrr=1"], "unknown key 'train.lrr'"),
    (["train", "--config", "/nonexistent/spec.yaml"], "spec file /nonexistent/spec.yaml does not exist"),
    # slow: these three import torch and build the model or the data before the error (~4 s
    # of CPU each, whole-process); the others fail while the spec is read.
    pytest.param(["train", "--set", "data.manifest=/nonexistent/m.parquet"], "/nonexistent/m.parquet",
                 marks=pytest.mark.slow),
    (["train", "--set", "model.name=cnnx", "--set", "model.options.stride=0"], "cnnx option 'stride' must be an int >= 1, got 0"),
    pytest.param(["train", "--set", "model.name=inception_v3", "--set", "model.image_size=64"],
                 "too small", marks=pytest.mark.slow),
    pytest.param(["train", "--set", "train.batch_size=5000", "--set", "model.image_size=32",
                  "--set", "data.synthetic.per_class=4", "--set", "data.synthetic.size=32"],
                 "larger than the training split", marks=pytest.mark.slow),
    (["data", "synth", "OUT", "--marker-leak", "2"], "marker_leak"),
    (["data", "import", "folder", "/nonexistent/dir", "--out", "m.parquet"], "/nonexistent/dir"),
    (["models", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_user_errors_are_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         args: list[str], match: str) -> None:
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "raybench.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("INFO ")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("raybench: error: ") and match in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing written, not even the spec


def test_data_synth_and_folder_import(tmp_path: Path, run_cli) -> None:
    code, out, _ = run_cli("data", "synth", str(tmp_path / "s"), "--per-class", "3", "--size", "32")
    assert code == 0 and "wrote 12 images" in out
    code, out, _ = run_cli("data", "import", "folder", str(tmp_path / "s" / "images"),
                           "--out", str(tmp_path / "m.parquet"), "--source", "synthetic")
    assert code == 0 and "12 images" in out
    imported = pd.read_parquet(tmp_path / "m.parquet")
    generated = pd.read_parquet(tmp_path / "s" / "manifest.parquet")
    assert sorted(imported["sha256"]) == sorted(generated["sha256"])
    assert imported["label"].value_counts().to_dict() == {"normal": 3, "bacteria": 3, "viral": 3, "covid19": 3}
