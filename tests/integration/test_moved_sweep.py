"""A sweep folder copied to another results root (another disk, S3) resumes there with
``--resume``: the identity check leaves the root out, Tune's state (which names the old root) is
rebuilt, and nothing is written back to the old root. The wrong spec is still refused."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from raybench import storage
from raybench.store import ResultStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]
SWEEP = "mv"
SETS = [f"name={SWEEP}", "sweep.models=[cnnx]", "sweep.seeds=[0]", "sweep.num_samples=2",
        "train.epochs=1", "sweep.progress_interval_s=60"]
T0, T1 = "cnnx-synthetic-s0-t000", "cnnx-synthetic-s0-t001"


def _args(root: str, cache: Path, *extra: str) -> list[str]:
    out = ["sweep", "--config", str(REPO / "jobs" / "smoke.yaml"), "--results", root]
    for item in [*SETS, f"data.cache_dir={cache}", *extra]:
        out += ["--set", item]
    return out


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(local_ray, tmp_path_factory):
    """(the root a finished sweep ran at, the decoded cache)."""
    from raybench.cli import main

    base = tmp_path_factory.mktemp("moved")
    root, cache = base / "a", base / "cache"
    assert main(_args(str(root), cache)) == 0
    return root, cache


def _resume_at(root: str, old: Path, cache: Path, capfd, caplog) -> str:
    """Resumes the copy at ``root`` (T1's results removed: it has work left) and checks that
    it completes there and leaves the old root untouched."""
    import logging

    from raybench.cli import main

    ResultStore(root).delete_trial_results(SWEEP, T1)
    before = _files(old)
    capfd.readouterr()
    caplog.set_level(logging.INFO, logger="raybench")
    code = main([*_args(root, cache), "--resume"])
    out, err = capfd.readouterr()
    said = out + err + caplog.text
    assert code == 0 and "Traceback" not in said, said[-3000:]
    assert f"moved from {old}" in said
    runs = ResultStore(root).read_table(SWEEP, "runs").sort_values("trial_id")
    assert runs["trial_id"].tolist() == [T0, T1]
    assert runs["status"].tolist() == ["completed", "completed"]
    epochs = ResultStore(root).read_table(SWEEP, "epochs")
    assert sorted(epochs["trial_id"]) == [T0, T1]  # one epoch each, T1 run once again
    assert _files(old) == before  # nothing written back to where it came from
    return said


def test_a_sweep_copied_to_another_local_root_resumes(finished, tmp_path, capfd, caplog):
    old, cache = finished
    new = tmp_path / "b"
    shutil.copytree(old, new)
    _resume_at(str(new), old, cache, capfd, caplog)
    saved = ResultStore(str(new)).read_spec(SWEEP) or ""
    assert f"results: {new}" in saved


@pytest.mark.s3
def test_a_sweep_copied_to_s3_resumes(finished, s3_bucket, s3_endpoint, capfd, caplog):
    old, cache = finished
    # The session Ray's workers have S3 credentials but no endpoint: the URI names it.
    root = f"s3://{s3_bucket}/moved?endpoint_override={s3_endpoint}"
    dest = storage.resolve(root).join(SWEEP)
    pafs.copy_files(str(old / SWEEP), dest.path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=dest.fs)
    _resume_at(root, old, cache, capfd, caplog)


def test_a_moved_sweep_given_another_spec_is_refused(finished, tmp_path, run_cli):
    old, cache = finished
    new = tmp_path / "c"
    shutil.copytree(old, new)
    before = _files(new)
    code, out, err = run_cli(*_args(str(new), cache, "train.epochs=3"), "--resume")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "was started with another spec" in lines[0] or "with another spec" in lines[0]
    assert _files(new) == before
