"""Seams between layers: result columns are spelt only in schema.py, CNN-X only in models/.

Both tests scan the AST of ``raybench/**/*.py``: every string constant that is not a docstring
(f-string pieces included, they are constants too), so comments and docstrings may name a
column or CNN-X freely.
"""
from __future__ import annotations

import ast
from pathlib import Path

from raybench import schema as S

PACKAGE = Path(__file__).resolve().parents[1] / "raybench"

#: (file under raybench/, literal) -> why that literal there is not a result column.
ALLOWED: dict[tuple[str, str], str] = {
    ("cli.py", "sweep"): "the `raybench sweep` subcommand's name",
    ("submit.py", "sweep"): "the `raybench sweep` subcommand a submitted job runs",
    ("bench/sweep.py", "sweep"): "the bench's sweep section (`raybench bench --only sweep`)",
    ("cli.py", "status"): "the `raybench submit status` query",
    ("cli.py", "source"): "`raybench models` header: the library a model comes from",
    ("models/listing.py", "source"): "the library a model comes from (timm, torchvision)",
    ("bench/runner.py", "value"): "a bench target's measured value (bench JSON key)",
    ("bench/sweep.py", "wall_s"): "a bench sweep's wall time (bench JSON key)",
    ("bench/runner.py", "seconds"): "the whole bench run's duration (bench JSON key)",
    ("submit.py", "value"): "the `.value` attribute of an enum (KubeRay job status)",
    ("data/confounds.py", "value"): "the top value of an image property in a confound summary",
    ("data/confounds.py", "label"): "the label's side ({label, others}) of a confound summary",
    ("data/importers/metadata_csv.py", "class"): "a header a foreign metadata CSV may give its labels",
    ("data/importers/mimic.py", "split"): "a column of MIMIC-CXR-JPG's official -split.csv",
    ("data/importers/rsna.py", "class"): "a column of RSNA's stage_2_detailed_class_info.csv",
    ("data/synth.py", "seed"): "the name of generate()'s argument in its error message",
    ("cam/__init__.py", "roi"): "the submodule raybench.cam.roi (lazy import table)",
    ("engine/loop.py", "lr"): "the key of a torch optimizer's param group",
    ("report/figures.py", "epoch"): "an axis title (display text)",
    ("plots.py", "predicted"): "an axis title (display text)",
    ("trial.py", "params"): "TrialConfig's searched-values key in a Tune trial config",
    ("models/table.py", "stride"): "CNN-X declares its option; the runs column follows from it",
    ("models/zoo.py", "image_size"): "the keyword torchvision's vision transformers take",
    ("models/weightfile.py", "model"): "the checkpoint key holding a state dict (Lightning, EMA)",
}


def result_columns() -> set[str]:
    """Every column name of the four result tables (predictions with the paper's labels; the
    runs table with the model options the model table declares)."""
    import raybench.models.table  # noqa: F401  registers the model-option columns

    schemas = [*S.TABLE_SCHEMAS.values(), S.predictions_schema(S.LABELS)]
    return {name for schema in schemas for name in schema.names}


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None) if isinstance(node, nodes) else None
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            found.add(id(body[0].value))
    return found


def string_constants(source: str) -> list[tuple[int, str]]:
    """(line, value) of every string constant in ``source`` that is not a docstring."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skip]


def _sources(exclude: tuple[str, ...] = ()) -> dict[str, str]:
    files = sorted(PACKAGE.rglob("*.py"))
    rels = {p.relative_to(PACKAGE).as_posix(): p for p in files}
    return {rel: p.read_text(encoding="utf-8") for rel, p in rels.items()
            if not rel.startswith(exclude)}


def column_literals(sources: dict[str, str], columns: set[str]) -> list[str]:
    """``file:line: 'literal'`` for each result-column literal not in :data:`ALLOWED`."""
    return [f"{rel}:{line}: {value!r}" for rel, text in sources.items()
            for line, value in string_constants(text)
            if value in columns and (rel, value) not in ALLOWED]


def cnnx_literals(sources: dict[str, str]) -> list[str]:
    """``file:line`` for each ``"cnnx"`` literal (any case) in ``sources``."""
    return [f"{rel}:{line}" for rel, text in sources.items()
            for line, value in string_constants(text) if value.lower() == "cnnx"]


def test_scanners_catch_planted_literals() -> None:
    """A planted column literal (plain, dict key, f-string piece) and a "cnnx" are found;
    the same words in a docstring or a comment are not."""
    planted = ('"""Docstring naming lr and cnnx."""\n'
               'x = {"lrr": 1, "lr": 2}  # lr in a comment\n'
               'y = f"{x}" f"value"\n'
               'def f():\n    """cnnx"""\n    return "cnnx"\n')
    assert column_literals({"planted.py": planted}, result_columns()) == [
        "planted.py:2: 'lr'", "planted.py:3: 'value'"]
    assert cnnx_literals({"planted.py": planted}) == ["planted.py:6"]
    allowed = {"engine/loop.py": 'g = opt.param_groups[0]["lr"]\n'}  # allowed there only
    assert column_literals(allowed, result_columns()) == []
    assert column_literals({"engine/run.py": allowed["engine/loop.py"]}, result_columns()) == [
        "engine/run.py:1: 'lr'"]


def test_result_columns_are_spelt_only_in_schema() -> None:
    """Outside schema.py a result column is `S.<NAME>`, never a string literal."""
    sources = _sources()
    del sources["schema.py"]
    assert "engine/run.py" in sources and len(sources) > 40  # the scan sees the package
    assert column_literals(sources, result_columns()) == []


def test_allow_list_entries_are_still_needed() -> None:
    """Each allowed literal still occurs in its file (a stale entry would hide a new use)."""
    sources = _sources()
    stale = [key for key in ALLOWED
             if key[1] not in {v for _, v in string_constants(sources[key[0]])}]
    assert stale == []


def test_cnnx_is_named_only_in_models() -> None:
    """CNN-X is special only inside raybench/models/ (elsewhere: names.PAPER_MODEL & co.)."""
    sources = _sources(exclude=("models/",))
    assert "report/evidence.py" in sources and not any(r.startswith("models/") for r in sources)
    assert cnnx_literals(sources) == []


def test_run_statuses_are_spelt_only_in_schema() -> None:
    """A run's status is `S.STATUS_*` outside schema.py, never a string literal."""
    statuses = {S.STATUS_COMPLETED, S.STATUS_STOPPED, S.STATUS_INTERRUPTED, S.STATUS_ERROR,
                S.STATUS_CRASHED}
    sources = _sources()
    del sources["schema.py"]
    found = column_literals(sources, statuses)
    assert column_literals({"x.py": 'status = "interrupted"\n'}, statuses) == ["x.py:1: 'interrupted'"]
    assert found == []


def test_the_sweep_outcome_needs_no_torch() -> None:
    """tune/outcome.py reads the state folder's name from the store, not from the torch worker,
    and the experiment imports the trainable only where trials run."""
    import subprocess
    import sys

    code = ("import sys, raybench.tune.outcome as o, raybench.store as st; "
            "assert o.STATE_DIR == st.STATE_DIR == '_state'; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_modules_log_under_their_own_names_and_the_cli_sets_the_package_level(run_cli) -> None:
    """``getLogger(__name__)`` everywhere (a literal name may only be the ``raybench`` package
    logger the CLI configures, or a third-party one); the CLI's level reaches every module
    through the ``raybench`` logger."""
    import logging
    import re

    literal = re.compile(r"getLogger\(\s*[\"'](raybench\.[^\"']*)[\"']")
    named = [f"{rel}: {m}" for rel, text in _sources().items() for m in literal.findall(text)]
    assert named == []
    package = logging.getLogger("raybench")
    before = package.level
    try:
        for flags, level in (([], logging.INFO), (["-v"], logging.DEBUG)):
            code, out, _ = run_cli(*flags, "models")
            assert code == 0 and "cnnx" in out and package.level == level
            assert logging.getLogger("raybench.tune.claim").getEffectiveLevel() == level
    finally:
        package.setLevel(before)
