"""Shared fixtures: tiny synthetic chest X-rays, the real shared data, CLI runner."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never download anything and never write outside tmp paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes x 40 synthetic images at 64 px (seed 0); returns the manifest path."""
    from raybench.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, per_class=40, size=64, seed=0)
    return out / "manifest.parquet"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real images next to the repository (skips when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real chest X-rays not found at {SHARED_DATA} (../shared/data)")
    return SHARED_DATA


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Runs ``raybench ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from raybench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run
