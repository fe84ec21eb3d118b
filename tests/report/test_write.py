"""report/write.py: where the report goes (a file as --out; a folder that already exists)."""
from __future__ import annotations

from pathlib import Path

import pytest

from raybench.errors import RaybenchError
from raybench.report.write import _move_into_place, write_report
from raybench.store import ResultStore
from tests.helpers.resultdata import write_scenario2


def test_out_that_is_a_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    write_scenario2(ResultStore(str(tmp_path / "runs")))
    out = tmp_path / "report.html"
    out.write_text("mine")
    with pytest.raises(RaybenchError) as err:
        write_report(str(tmp_path / "runs"), "s2", out)
    assert str(err.value) == f"--out {out} is a file; pass a folder for the report"
    assert out.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "runs"]  # no temp dir


def test_a_finished_report_moves_into_an_existing_folder_without_figures(tmp_path: Path) -> None:
    tmp, out = tmp_path / ".out.tmp", tmp_path / "out"
    (tmp / "figures").mkdir(parents=True)
    (tmp / "figures" / "a.png").write_bytes(b"png")
    (tmp / "report.md").write_text("new md")
    (tmp / "report.html").write_text("new html")
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    (out / "report.md").write_text("old md")
    _move_into_place(tmp, out)
    assert sorted(p.name for p in out.iterdir()) == ["figures", "notes.txt", "report.html",
                                                     "report.md"]
    assert (out / "figures" / "a.png").read_bytes() == b"png"
    assert (out / "report.md").read_text() == "new md" and (out / "notes.txt").read_text() == \
        "the user's"
    assert sorted(p.name for p in tmp.iterdir()) == []  # everything moved, no old figures
