"""Faults without Ray: disk full, re-used sweep names. (Killed workers and drivers: test_sweep_ray.)"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from raybench.config import load_spec
from raybench.errors import RaybenchError
from raybench.store import ResultStore
from raybench.tune.claim import claim_sweep as _claim_sweep
from raybench.config import dump_yaml

REPO = Path(__file__).resolve().parents[2]


def _train_args(tmp: Path, seed: int) -> list[str]:
    return ["train", "--config", str(REPO / "jobs" / "train-cnnx-synthetic.yaml"),
            "--set", "train.epochs=1", "--set", f"train.seed={seed}",
            "--set", f"data.cache_dir={tmp / 'cache'}", "--results", str(tmp / "runs")]


def test_disk_full_is_one_line_and_earlier_results_survive(tmp_path: Path, run_cli,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(*_train_args(tmp_path, seed=0))
    assert code == 0, err
    sweep = tmp_path / "runs" / "cnnx-synthetic"
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = run_cli(*_train_args(tmp_path, seed=1))
    monkeypatch.undo()
    lines = [ln for ln in err.splitlines() if ln.startswith("raybench")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("raybench: error: cannot write ") and "No space left on device" in lines[0]
    after = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    assert after == before, "earlier results intact, no partial or temporary files"


def test_sweep_names_are_claimed_once(tmp_path: Path) -> None:
    spec = load_spec(REPO / "jobs" / "smoke.yaml", [f"results={tmp_path}"])
    store = ResultStore(str(tmp_path))
    assert _claim_sweep(store, spec, resume=True, overwrite=False) is False  # resume-or-start
    (tmp_path / "smoke" / "_claim.json").unlink()
    _claim_sweep(store, spec, resume=False, overwrite=False)  # new name: fine
    store.write_spec("smoke", dump_yaml(spec))
    store.write_table("smoke", "runs", "t1", [{"model": "cnnx", "scenario": "synthetic",
                                                "seed": 0, "status": "completed"}])
    with pytest.raises(RaybenchError, match="already exists .* use --resume"):
        _claim_sweep(store, spec, resume=False, overwrite=False)
    _claim_sweep(store, spec, resume=True, overwrite=False)  # same spec: resumable
    other = load_spec(REPO / "jobs" / "smoke.yaml", [f"results={tmp_path}", "train.epochs=9"])
    with pytest.raises(RaybenchError, match="started with another spec"):
        _claim_sweep(store, other, resume=True, overwrite=False)
    with pytest.raises(RaybenchError, match="exclude each other"):
        _claim_sweep(store, spec, resume=True, overwrite=True)
    _claim_sweep(store, spec, resume=False, overwrite=True)
    assert [p.name for p in (tmp_path / "smoke").iterdir()] == ["_claim.json"], \
        "--overwrite starts from an empty sweep folder (holding the new claim)"
