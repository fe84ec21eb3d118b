"""report/probe.py: an unreadable manifest costs the source-probe section, not the report."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from raybench.report.probe import probe_blocks
from raybench.results import load
from raybench.store import ResultStore


def test_an_unreadable_manifest_leaves_the_section_out_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"not parquet")
    ResultStore(str(tmp_path / "runs")).write_spec("s", f"data:\n  manifest: {manifest}\n")
    with caplog.at_level(logging.WARNING, logger="raybench.report.probe"):
        assert probe_blocks(load(str(tmp_path / "runs"), "s"), "s") == []
    [message] = caplog.messages
    assert message.startswith(f"no source probe for s: {manifest}: not a readable Parquet "
                              "manifest (")
