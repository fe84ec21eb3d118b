"""README.md is executable: every ```bash / ```sh / ```python block runs here, in order, or is
marked as not run with the reason (``<!-- readme-test: skip (needs a GPU) -->`` on the line
before its fence; :mod:`tests.helpers.readme_blocks`). A new block is run as it is, so a block
that cannot run fails this test until it works or says what it needs.

How the blocks run:
- In a copy of the checkout (its tracked and untracked files, committed to a fresh git
  repository) in a temporary folder: the README's relative paths (``./runs``, ``jobs/...``)
  land there, and ``git status`` of the copy must be clean afterwards. ``../shared/data`` of
  the copy is a tiny stand-in laid out like the real Kermany and Hannover sets.
- ``raybench ...`` (or ``.venv/bin/raybench``) runs in-process on the session's local Ray;
  ``export K=V`` sets the variable for the blocks after it; Python blocks share one
  namespace, as cells of a notebook do. Anything else is a failure naming the block.
- Shrunken configs: the only change to a command is ``--set`` overrides appended to the
  commands that train (:data:`SHRINK`: fewer epochs, smaller images), and ``--limit 2`` to
  ``models --search`` (:data:`SHRINK_ARGS`). ``--resume`` gets the same overrides as the run
  it continues, so the spec it compares is the same.
- Before the blocks, ``make demo``'s ``raybench demo`` command (read from the Makefile) runs:
  the Quickstart block itself installs the environment and is marked.

What is checked against what README says: exit codes (0 unless the command's comment says
``exits N``), a Python expression's value where its comment shows the start of its repr
(``Results(root='runs', ...``), the demo's report path and three hints, the model list, the
smoke sweep's trial count and progress line, the resumed finished sweep's closing line, the
results tree, the chance level the demo's report states, the notebook API without torch, the
job list, and that figures the README quotes as measured appear in ``benchmarks/RESULTS.md``
(a sentence quotes a measurement when it says took, measured, peaked, grew or cites
RESULTS.md; each number with a unit in it must be a RESULTS.md number, as written or rounded,
with the same unit on its line or in its table's header).

Cost: one demo and one smoke sweep on the session's Ray dominate (about 80 s on the 2 shared
cores at load 7-10); the tests that read them are ``slow``.
"""
from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.helpers.rayenv import RAY_WORKER_ENV
from tests.helpers.readme_blocks import (
    RUN_LANGS,
    Block,
    Command,
    MarkerError,
    blocks,
    shell_commands,
)

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RAYBENCH = ("raybench", ".venv/bin/raybench")
#: ``--set`` overrides appended to the commands that train, by subcommand.
SHRINK = {"demo": ("train.epochs=1",), "sweep": ("train.epochs=1",),
          "train": ("train.epochs=1", "model.image_size=32")}
#: Options appended to other commands: ``models --search`` lists 2 matches, not every one.
SHRINK_ARGS = {("models", "--search"): ("--limit", "2")}
_EXITS = re.compile(r"\bexits? (?:with )?(?:code )?(\d+)\b")


@dataclass
class Ran:
    """One command or Python statement that ran: where, what it printed and how it ended."""

    line: int
    what: str
    code: Optional[int] = None
    expected: int = 0
    out: str = ""
    err: str = ""
    logs: list[str] = field(default_factory=list)
    value: Any = None
    comment: str = ""
    seconds: float = 0.0


@dataclass
class Session:
    """What the README's blocks did: every block seen, what ran, and the copy they ran in."""

    checkout: Path
    seen: list[Block] = field(default_factory=list)
    ran: list[Ran] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    namespace: dict[str, Any] = field(default_factory=dict)

    def find(self, prefix: str) -> list[Ran]:
        return [r for r in self.ran if r.what.startswith(prefix)]


# ---------------------------------------------------------------- the copy and its data

def _copy_checkout(dest: Path) -> Path:
    """The checkout's tracked and untracked (not ignored) files, committed in a new repo."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + args, cwd=dest, check=True, capture_output=True)
    return dest


def _stand_in_shared_data(data: Path, per_class: int = 10) -> None:
    """Kermany's layout (NORMAL/IM-*, PNEUMONIA/person*_bacteria|virus_*) and Hannover's
    (data.csv with patient_id, image_id; png/<image_id>.png), 32 px noise films."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def film(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(path)

    kermany = data / "kermany-cxr-train"
    for k in range(per_class):
        film(kermany / "NORMAL" / f"IM-{k:04d}-0001.jpeg")
        film(kermany / "PNEUMONIA" / f"person{k}_bacteria_{k}.jpeg")
        film(kermany / "PNEUMONIA" / f"person{100 + k}_virus_{k}.jpeg")
    rows = ["patient_id,image_id,sex,projection"]
    for k in range(per_class):
        film(data / "hannover-covid" / "png" / f"h{k:04d}.png")
        rows.append(f"p{k:04d},h{k:04d},f,pa")
    (data / "hannover-covid" / "data.csv").write_text("\n".join(rows) + "\n")


# ---------------------------------------------------------------- running a block

@contextlib.contextmanager
def _captured():
    """stdout, stderr and the ``raybench`` log records of what runs inside."""
    out, err, logs = io.StringIO(), io.StringIO(), []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logs.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    handler = Keep(logging.INFO)
    logger = logging.getLogger("raybench")
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err, logs
    finally:
        logger.removeHandler(handler)


def _raybench(argv: list[str], line: int, expected: int = 0) -> Ran:
    from raybench.cli import main

    sub = argv[0] if argv else ""
    shrink = [w for kv in SHRINK.get(sub, ()) for w in ("--set", kv)]
    shrink += [w for (cmd, option), more in SHRINK_ARGS.items()
               if sub == cmd and option in argv for w in more]
    ran = Ran(line, "raybench " + " ".join(argv), expected=expected)
    start = time.monotonic()
    with _captured() as (out, err, logs):
        try:
            ran.code = main(argv + shrink)
        except SystemExit as exc:  # argparse's own exit
            ran.code = exc.code if isinstance(exc.code, int) else 2
    ran.out, ran.err, ran.logs = out.getvalue(), err.getvalue(), logs
    ran.seconds = time.monotonic() - start
    return ran


def _run_shell(session: Session, block: Block, mp: pytest.MonkeyPatch) -> None:
    for cmd in shell_commands(block):
        if cmd.argv[0] in RAYBENCH:
            expected = _EXITS.search(cmd.comment)
            ran = _raybench(list(cmd.argv[1:]), cmd.line, int(expected.group(1)) if expected else 0)
            ran.comment = cmd.comment
            session.ran.append(ran)
        elif cmd.argv[0] == "export" and all("=" in w for w in cmd.argv[1:]):
            for word in cmd.argv[1:]:
                mp.setenv(*word.split("=", 1))
            session.ran.append(Ran(cmd.line, " ".join(cmd.argv), code=0))
        else:
            session.problems.append(_cannot(cmd))


def _cannot(cmd: Command) -> str:
    return (f"README line {cmd.line}: the test cannot run {' '.join(cmd.argv)!r}; make it a "
            "raybench command or mark its block '<!-- readme-test: skip (WHAT IT NEEDS) -->'")


def _run_python(session: Session, block: Block) -> None:
    """Each top-level statement in turn; an expression's value is kept with its comment."""
    source = block.text.splitlines()
    tree = ast.parse(block.text, filename=f"README.md:{block.line}")
    for node in tree.body:
        line = block.line + node.lineno
        last = source[(node.end_lineno or node.lineno) - 1]
        comment = last.split("#", 1)[1].strip() if "  #" in last else ""
        ran = Ran(line, ast.get_source_segment(block.text, node) or "", comment=comment)
        start = time.monotonic()
        try:
            with _captured() as (out, err, logs):
                if isinstance(node, ast.Expr):
                    ran.value = eval(compile(ast.Expression(node.value), "README.md", "eval"),
                                     session.namespace)
                else:
                    exec(compile(ast.Module([node], []), "README.md", "exec"), session.namespace)
            ran.code, ran.out, ran.err, ran.logs = 0, out.getvalue(), err.getvalue(), logs
        except Exception as exc:
            ran.code, ran.err = 1, f"{type(exc).__name__}: {exc}"
        ran.seconds = time.monotonic() - start
        session.ran.append(ran)


def _make_demo_command() -> list[str]:
    """The ``raybench`` words of the Makefile's ``demo`` recipe, its variables filled in."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.M)
    assert recipe, "the Makefile has a demo target"
    words = recipe.group(1).split()
    assert words[0] == "$(BIN)/raybench", recipe.group(1)
    values = dict(re.findall(r"^(\w+) \?= (\S+)$", makefile, re.M))
    return [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], w) for w in words[1:]]


@pytest.fixture(scope="module")
def readme(local_ray: str, tmp_path_factory: pytest.TempPathFactory, repo_status: str):
    """Runs the README once for the module's tests; returns the :class:`Session`.

    One demo and one smoke sweep on the session's Ray: about a minute on 2 cores, so the tests
    that read it are ``slow`` (``local_ray`` makes them ``ray``); the text checks are neither.
    """
    root = tmp_path_factory.mktemp("readme")
    checkout = root / "checkout"
    checkout.mkdir()
    _copy_checkout(checkout)
    _stand_in_shared_data(root / "shared" / "data")
    session = Session(checkout)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(checkout)
        mp.delenv("RAY_ADDRESS", raising=False)  # the in-process commands use the session Ray
        # the driver holds the workers' S3 secret too: it must reach no output (test below)
        mp.setenv("AWS_SECRET_ACCESS_KEY", RAY_WORKER_ENV["AWS_SECRET_ACCESS_KEY"])
        session.ran.append(_raybench(_make_demo_command(), 0))
        for block in blocks(README.read_text()):
            if block.lang not in RUN_LANGS:
                continue
            session.seen.append(block)
            if block.skip:
                continue
            if block.lang == "python":
                _run_python(session, block)
            else:
                _run_shell(session, block, mp)
    for r in session.ran:  # where the time went, and what failed (pytest -s shows it)
        print(f"README line {r.line}: {r.seconds:.1f} s {r.what[:70]}")
        if r.code != r.expected:
            print(r.err[-3000:])
    return session


@pytest.fixture(scope="module")
def repo_status() -> str:
    """The real checkout's ``git status`` before the README ran (it must not change)."""
    return _git_status(REPO)


def _git_status(where: Path, *more: str) -> str:
    return subprocess.run(["git", "status", "--porcelain", *more], cwd=where, check=True,
                          capture_output=True, text=True).stdout


def _failed(r: Ran) -> str:
    return f"README line {r.line}: {r.what!r} exited {r.code}, not {r.expected}: {r.err[-600:]}"


# ---------------------------------------------------------------- the tests

@pytest.mark.slow
def test_every_block_runs_or_says_why_not(readme: Session) -> None:
    assert readme.problems == []
    shown = [b for b in blocks(README.read_text()) if b.lang in RUN_LANGS]
    assert [b.line for b in readme.seen] == [b.line for b in shown]
    ends = [b.line + b.text.count("\n") + 1 for b in readme.seen]
    for block, end in zip(readme.seen, ends):
        ran = [r for r in readme.ran if block.line < r.line <= end]
        assert block.skip or ran, f"README line {block.line}: block neither ran nor marked"
        assert not (block.skip and ran)


@pytest.mark.slow
def test_every_command_exits_as_the_readme_says(readme: Session) -> None:
    wrong = [_failed(r) for r in readme.ran if r.code != r.expected]
    assert wrong == []
    strict = readme.find("raybench data audit")
    assert strict and strict[0].expected == 1  # the README says why this one exits 1
    assert "confound" in strict[0].err


@pytest.mark.slow
def test_python_values_show_what_their_comments_say(readme: Session) -> None:
    """A comment after an expression that starts like a repr (``Name(``) and holds ``...``
    shows the start of the value's repr, up to the ``...``."""
    promised = [r for r in readme.ran if re.match(r"[A-Z]\w*\(", r.comment) and "..." in r.comment]
    assert promised, "the README shows a repr (Results(...)) that is checked"
    for r in promised:
        shown = r.comment.split("...")[0].rstrip()
        assert repr(r.value).startswith(shown), (r.line, repr(r.value))


@pytest.mark.slow
def test_the_demo_prints_its_report_and_three_things_to_look_at(readme: Session) -> None:
    demo = readme.ran[0]
    assert demo.what.startswith("raybench demo --results ./runs") and demo.code == 0, demo.err
    text = " ".join(README.read_text().split())
    report = re.search(r"the report to `\./(runs/demo/report/report\.html)`", text)
    assert report and f"report:  {report.group(1)}" in demo.out.splitlines()
    tail = demo.out.splitlines()[demo.out.splitlines().index("In the report, look at:") + 1:]
    assert [t[:5] for t in tail] == ["  1. ", "  2. ", "  3. "]
    # The chance level the README quotes is the one the demo's report states.
    quoted = re.search(r"the lung masks' share of the images, about (0\.\d+) here", text)
    stated = re.search(r"Chance level of ROI focus: (0\.\d+)",
                       (readme.checkout / "runs/demo/report/report.md").read_text())
    assert quoted and stated and abs(float(stated.group(1)) - float(quoted.group(1))) <= 0.01


@pytest.mark.slow
def test_models_lists_the_readme_zoo(readme: Session) -> None:
    listed = re.search(r"\*\*Models\*\*: `([^`]+)`", README.read_text())
    assert listed
    names = {line.split()[0] for line in readme.find("raybench models")[0].out.splitlines()[1:]}
    assert set(listed.group(1).replace("\n", " ").replace(" ", "").split(",")) == names


@pytest.mark.slow
def test_smoke_sweep_has_2_models_x_2_trials_and_its_resume_says_it_had_finished(
        readme: Session) -> None:
    first, resumed = readme.find("raybench sweep --config jobs/smoke.yaml")[:2]
    assert "2 models x 2 trials" in first.comment
    trials = sorted(line.split()[0] for line in first.out.splitlines() if " completed " in line)
    assert len(trials) == 4 and len({t.split("-")[0] for t in trials}) == 2, first.out
    # A finished sweep resumed: no trial of this session to list, and it says so.
    assert resumed.what.endswith("--resume") and resumed.code == 0
    lines = resumed.out.splitlines()
    assert ("sweep smoke had already finished: its 4 trial(s) ended in earlier sessions; "
            "nothing left to run") in lines and lines[-1] == "results: ./runs/smoke"
    assert not [line for line in lines if " completed " in line], resumed.out
    # What the sweep wrote (this was test_sweep_ray's own smoke sweep, the same command).
    import pandas as pd

    sweep = readme.checkout / "runs" / "smoke"
    runs = pd.read_parquet(sweep / "runs").set_index("trial_id").sort_index()
    assert list(runs.index) == trials and (runs["status"] == "completed").all()
    # The first Optuna trial of a searched model is the paper's defaults; the second is not.
    first_cnnx = runs.loc["cnnx-synthetic-s0-t000"]
    assert (first_cnnx["lr"], first_cnnx["batch_size"], first_cnnx["stride"]) == (3e-4, 15, 3)
    assert runs.loc["squeezenet-synthetic-s0-t000", "lr"] == 3e-4
    second = runs.loc["cnnx-synthetic-s0-t001"]
    assert (second["lr"], second["batch_size"], second["stride"]) != (3e-4, 15, 3)
    for table in ("metrics", "epochs", "predictions"):
        assert sorted(p.stem for p in (sweep / table).glob("*.parquet")) == trials
    assert (sweep / "spec.yaml").is_file()


@pytest.mark.slow
def test_no_credential_reaches_a_result_a_log_or_the_output(readme: Session) -> None:
    """The session Ray's workers and the README's driver hold an S3 secret key
    (``RAY_WORKER_ENV``; the ``readme`` fixture sets it for the driver too); it is in no file
    the commands wrote, no Ray log of the session and nothing they printed."""
    import ray

    secret = RAY_WORKER_ENV["AWS_SECRET_ACCESS_KEY"]
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    files = [p for root in (readme.checkout / "runs", session / "logs") for p in root.rglob("*")
             if p.is_file()]
    assert len(files) > 100
    assert [str(p) for p in files if secret.encode() in p.read_bytes()] == []
    assert [r.what for r in readme.ran if secret in r.out + r.err + "".join(r.logs)] == []


@pytest.mark.slow
def test_the_progress_line_has_the_readme_examples_form(readme: Session) -> None:
    """The README's example summary line, its figures and names left free, is the form of the
    smoke sweep's last one."""
    example = next(b.text.strip() for b in blocks(README.read_text())
                   if not b.lang and "raybench.tune.progress: sweep smoke" in b.text)
    form = " ".join(r"\S+" if re.search(r"\d", w) else re.escape(w) for w in example.split())
    logged = [line for line in readme.find("raybench sweep --config jobs/smoke.yaml")[0].logs
              if "raybench.tune.progress: sweep smoke |" in line]
    assert logged and re.fullmatch(form, logged[-1]), (example, logged[-1:])


@pytest.mark.slow
def test_the_results_layout_and_the_files_the_commands_write(readme: Session) -> None:
    """The README's results tree (``<root>/<sweep>/...``) on the demo sweep; the report, CAM
    images, markdown table and synthetic masks the commands say they write."""
    tree = next(b.text for b in blocks(README.read_text()) if b.text.startswith("<root>/<sweep>/"))
    demo = readme.checkout / "runs" / "demo"
    for entry in re.findall(r"^<root>/<sweep>/(\S+)", tree, re.M):
        folder, _, name = entry.partition("/")
        if name.startswith("<"):  # one file per trial (or lease generation) in the folder
            suffix = name.split(">", 1)[1]
            found = list((demo / folder).glob(f"*{suffix}"))
            assert found or folder == "_state", entry  # _state: only unfinished trials' files
        else:
            assert (demo / entry).exists(), entry
    report = demo / "report"
    assert (report / "report.md").is_file()
    assert "data:image/png;base64," in (report / "report.html").read_text()  # self-contained
    import pandas as pd

    runs = pd.read_parquet(demo / "runs")  # the demo's models, each in paper-1 and paper-3
    models = sorted(runs["model"].unique())
    assert sorted(runs["trial_id"]) == sorted(f"{m}-{sc}-s0" for m in models
                                              for sc in ("paper-1", "paper-3"))
    assert (runs["status"] == "completed").all() and (runs["epochs_run"] == 1).all()
    preds = pd.read_parquet(demo / "predictions")
    p1 = preds[preds["trial_id"] == f"{models[0]}-paper-1-s0"]
    assert set(p1["label"]) == {"normal", "covid19"}  # paper-1: normal vs COVID-19
    assert list((readme.checkout / "runs" / "cam-images").glob("*.png"))
    table = readme.find("raybench results runs --sweep demo --table paper --scenario paper-3 "
                        "--format markdown")[0]
    assert table.out.lstrip().startswith("|"), table.out[:200]
    synth = pd.read_parquet(readme.checkout / "runs" / "synth" / "manifest.parquet")
    assert len(synth) == 4 * 40 and synth["mask_path"].notna().all()  # synthetic + masks


@pytest.mark.slow
def test_the_notebook_api_but_compute_cams_imports_neither_torch_nor_ray(readme: Session) -> None:
    """README: ``import raybench`` imports neither torch nor Ray, and of the notebook API only
    ``compute_cams`` imports torch (a fresh interpreter: this one has both)."""
    code = ("import sys, raybench; res = raybench.load('runs', sweep='demo'); "
            "res.paper_table('paper-3'); res.findings(n_boot=20); res.cams('cnnx-paper-3-s0'); "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=readme.checkout, check=True, text=True,
                         capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_git_status_stays_clean_after_the_readme_commands(readme: Session, repo_status: str,
                                                          tmp_path: Path) -> None:
    assert _git_status(readme.checkout) == ""  # every output went to an ignored folder
    assert _git_status(REPO) == repo_status  # and nothing into the real checkout
    if shutil.which("make"):  # README: `make clean` removes what the commands wrote
        cleaned = shutil.copytree(readme.checkout, tmp_path / "cleaned", symlinks=True)
        subprocess.run(["make", "-s", "clean"], cwd=cleaned, check=True)
        assert _git_status(cleaned, "--ignored") == ""


# ---------------------------------------------------------------- figures: from RESULTS.md

_UNITS = {"s": "s", "ms": "ms", "min": "min", "minute": "min", "minutes": "min", "h": "h",
          "hours": "h", "MiB": "MiB", "GiB": "GiB", "images/s": "images/s"}
_FIGURE = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*(images/s|minutes?|hours|min|MiB|GiB|ms|s|h)"
                     r"(?![\w/])")
#: A sentence with one of these words quotes a measurement (not a setting such as a timeout).
_MEASURED = re.compile(r"\b(took|takes about|measured|peaked|grew)\b|RESULTS\.md")


def _sentences(markdown: str) -> list[str]:
    flat = " ".join(markdown.split())
    return re.split(r"(?<=[.;])\s+(?=[A-Z`(*])", flat)


def measured_figures(markdown: str) -> list[tuple[str, str, str]]:
    """(value, unit, sentence) of every figure with a unit in a sentence that quotes a
    measurement."""
    return [(value, _UNITS[unit], sentence) for sentence in _sentences(markdown)
            if _MEASURED.search(sentence) for value, unit in _FIGURE.findall(sentence)]


def _results_figures(results_md: str) -> set[tuple[float, str]]:
    """Every number of RESULTS.md written with its unit, or in a table whose header names the
    unit in parentheses (``RSS (MiB)``)."""
    out, header = set(), ""
    for line in results_md.splitlines():
        header = (header or line) if line.startswith("|") else ""
        out |= {(float(v.replace(",", "")), _UNITS[u]) for v, u in _FIGURE.findall(line)}
        for unit in {u for u in set(_UNITS.values()) if f"({u})" in header}:
            out |= {(float(n.replace(",", "")), unit)
                    for n in re.findall(r"\d[\d,]*(?:\.\d+)?", line)}
    return out


def _found(value: str, unit: str, known: set[tuple[float, str]]) -> bool:
    """``value`` is a figure of RESULTS.md, as written or rounded to ``value``'s decimals."""
    decimals = len(value.split(".")[1]) if "." in value else 0
    target = float(value.replace(",", ""))
    return any(u == unit and round(v, decimals) == target for v, u in known)


def test_figures_the_readme_quotes_as_measured_are_in_results_md() -> None:
    known = _results_figures((REPO / "benchmarks" / "RESULTS.md").read_text())
    figures = measured_figures(README.read_text())
    assert len(figures) >= 4, "the rule still finds the README's measured figures"
    missing = [f"{v} {u}: {s[:160]}" for v, u, s in figures if not _found(v, u, known)]
    assert missing == []


def test_the_figure_rule_tells_a_measurement_from_a_setting() -> None:
    known = _results_figures("| point | RSS (MiB) |\n|---|---:|\n| peak | **827.2** |\n"
                             "200,000 hashes in **7.7 s**.\n")
    assert _found("827", "MiB", known) and _found("7.7", "s", known)
    assert not _found("827", "s", known) and not _found("7.8", "s", known)
    text = ("A driver peaked at 827 MiB. It renews its lease every 10 s. The demo took 56 s "
            "on 2 CPUs.")
    assert [(v, u) for v, u, _ in measured_figures(text)] == [("827", "MiB"), ("56", "s")]


def test_every_block_is_a_language_the_test_runs_or_plain_data() -> None:
    """A ```shell or ```py block would slip past the runner: blocks are ``bash``, ``sh`` or
    ``python`` (run), ``yaml`` (specs, shown) or unlabelled (output, file trees)."""
    langs = {b.lang for b in blocks(README.read_text())}
    assert langs <= set(RUN_LANGS) | {"yaml", ""}, langs


def test_the_readme_names_every_job_file() -> None:
    """Its list of ``jobs/`` (``paper-scenario{1,2,3}.yaml`` spelt with braces)."""
    text = README.read_text()
    listed = set(re.findall(r"`([\w-]+\.yaml)`", text))
    for stem, alts in re.findall(r"`([\w-]+)\{([\d,]+)\}\.yaml`", text):
        listed |= {f"{stem}{a}.yaml" for a in alts.split(",")}
    assert {p.name for p in (REPO / "jobs").glob("*.yaml")} <= listed


# ---------------------------------------------------------------- the markers and the runner

def test_a_marker_names_what_a_block_needs_and_stands_before_its_fence() -> None:
    text = ("Intro\n<!-- readme-test: skip (needs a GPU) -->\n```bash\nraybench plan\n```\n\n"
            "  ```python\n  import raybench\n  ```\n")
    found = blocks(text)
    assert [(b.lang, b.line, b.text, b.skip) for b in found] == [
        ("bash", 3, "raybench plan\n", "needs a GPU"), ("python", 7, "import raybench\n", None)]
    with pytest.raises(MarkerError, match="line 1: .* just before a code fence"):
        blocks("<!-- readme-test: skip (needs a GPU) -->\n\n```bash\nx\n```\n")
    with pytest.raises(MarkerError, match="line 1: .*skip \\(WHAT IT NEEDS\\)"):
        blocks("<!-- readme-test: skip -->\n```bash\nx\n```\n")


def test_an_unmarked_block_the_test_cannot_run_fails_it(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    block = blocks("```bash\nmake install   # a new block\n```\n")[0]
    session = Session(tmp_path)
    _run_shell(session, block, monkeypatch)
    assert session.problems == [_cannot(shell_commands(block)[0])]
    assert "README line 2: the test cannot run 'make install'" in session.problems[0]
    cmds = shell_commands(blocks("```sh\nraybench results runs \\\n  --sweep 'a b'  # exits 2 "
                                 "here\n```\n")[0])
    assert cmds == [Command(("raybench", "results", "runs", "--sweep", "a b"), "exits 2 here", 2)]
