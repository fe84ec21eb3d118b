"""The CLI starts without its heavy dependencies, and its help is plain text.

``raybench --help``, a sub-command's ``--help`` and a spec error must not import pandas,
pyarrow, torch or Ray (they cost seconds together); each runs in a fresh interpreter with
``-X importtime``, whose report names every module the process imported.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from raybench.cli import build_parser
from raybench.results import choices

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"pandas", "pyarrow", "torch", "ray", "matplotlib"}


def _imported(*args: str) -> tuple[int, set[str], str]:
    """(exit code, top-level modules imported, stderr without the import report)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "raybench.cli", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    report = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in report[1:]}
    rest = "\n".join(line for line in proc.stderr.splitlines() if line not in report)
    return proc.returncode, names, rest


@pytest.mark.parametrize("args", [("--help",), ("results", "--help"),
                                  ("data", "import", "--help"), ("sweep", "--help")])
def test_help_imports_no_heavy_module(args: tuple[str, ...]) -> None:
    code, names, _ = _imported(*args)
    assert code == 0
    assert "raybench" in names and "argparse" in names  # the report was read
    assert sorted(names & HEAVY) == []


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_spec_error_is_one_line_and_imports_no_heavy_module(tmp_path: Path,
                                                              command: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain:\n  lrr: 1\n", encoding="utf-8")
    code, names, err = _imported(command, "--config", str(bad))
    assert code == 2
    assert err.strip().count("\n") == 0 and "unknown key 'train.lrr'" in err
    assert sorted(names & HEAVY) == []


def test_a_missing_manifest_is_one_line_before_torch_or_ray_is_imported(tmp_path: Path) -> None:
    """``raybench train`` reads the data for its time estimate before it imports the training
    code: a wrong manifest path costs a fraction of a second, not torch's import."""
    missing = tmp_path / "nowhere" / "m.parquet"
    code, names, err = _imported("train", "--set", f"data.manifest={missing}",
                                 "--results", str(tmp_path / "runs"))
    assert code == 2
    assert err.strip() == f"raybench: error: {missing}: manifest file does not exist"
    assert sorted(names & {"torch", "ray"}) == []


def _parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``prog`` -> parser, for the parser and every sub-command's, recursively."""
    out = {parser.prog: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out.update(_parsers(sub))
    return out


def test_every_help_text_is_plain_text() -> None:
    texts = {prog: p.format_help() for prog, p in _parsers(build_parser()).items()}
    assert "raybench data import" in texts and len(texts) >= 14
    markup = re.compile(r"``|:(class|func|mod|meth|data):`")
    assert {prog: markup.search(t).group(0) for prog, t in texts.items()
            if markup.search(t)} == {}


def test_results_choices_are_the_registries() -> None:
    sub = _parsers(build_parser())["raybench results"]
    got = {a.dest: tuple(a.choices) for a in sub._actions if a.choices is not None}
    assert got["table"] == choices.QUERIES == ("runs", "metrics", "paper", "significance",
                                               "findings")
    assert got["format"] == choices.FORMATS and got["interval"] == choices.INTERVALS


def test_render_takes_every_format_and_query_names_the_choices(tmp_path: Path) -> None:
    import pandas as pd

    from raybench.errors import RaybenchError
    from raybench.results import query, render
    from raybench.store import ResultStore
    from tests.helpers.resultdata import write_scenario2

    frame = pd.DataFrame({"a": [1.5], "b": ["x"]})
    assert [len(render(frame, fmt)) > 0 for fmt in choices.FORMATS] == [True] * 4
    write_scenario2(ResultStore(str(tmp_path)))
    with pytest.raises(RaybenchError, match="choose from runs, metrics, paper, significance, "
                                            "findings"):
        query(str(tmp_path), "s2", "nope")
