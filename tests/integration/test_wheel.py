"""A wheel install works outside the checkout (issue 21.8).

Builds the wheel from a copy of the sources, installs it with ``--no-deps`` into a fresh venv
whose dependencies come from this environment's site-packages (a ``.pth`` line: the base
interpreter is pyenv's, so ``--system-site-packages`` would not see them), and from a folder
outside the checkout: imports every module from the wheel, loads the packaged demo spec, runs
``raybench models``, and starts ``raybench demo`` on that spec up to its spec check. The demo's
training and report are integration/test_sweep_ray.py's (the same code, from the checkout).
"""
from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "raybench", src / "raybench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("raybench-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # Dependencies from this environment; raybench itself only from the wheel (site-packages
    # comes before a .pth line on sys.path, and this venv's editable finder is not loaded).
    (Path(purelib) / "raybench-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)
    return venv


#: Run by the wheel's interpreter: where raybench comes from, every module imported, and the
#: packaged demo spec as loaded.
PROBE = """
import importlib, json, pkgutil
import raybench, raybench.cli as c
from raybench.config import load_spec
names = [m.name for m in pkgutil.walk_packages(raybench.__path__, "raybench.")]
files = [importlib.import_module(n).__file__ for n in names]
spec = load_spec(c.DEMO_SPEC, [])
print(json.dumps({"files": [raybench.__file__, str(c.DEMO_SPEC), *files], "modules": names,
                  "name": spec.name, "models": list(spec.sweep.models),
                  "scenarios": list(spec.sweep.scenarios), "epochs": spec.train.epochs}))
"""


@pytest.mark.slow
def test_wheel_imports_loads_the_demo_spec_and_starts_outside_the_checkout(tmp_path: Path) -> None:
    import json

    venv = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE], cwd=work, env=env,
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.splitlines()[-1])
    assert all(p.startswith(str(venv)) for p in found["files"]), found  # not the checkout's
    in_checkout = [m.name for m in pkgutil.walk_packages([str(REPO / "raybench")], "raybench.")]
    assert found["modules"] == in_checkout and len(in_checkout) > 90  # all packaged, importable
    assert (found["name"], found["models"], found["scenarios"], found["epochs"]) == (
        "demo", ["cnnx", "resnet18"], ["paper-1", "paper-3"], 5)
    models = subprocess.run([str(venv / "bin" / "raybench"), "models"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert models.returncode == 0, models.stderr
    names = [line.split()[0] for line in models.stdout.splitlines()[1:]]
    assert names[-1] == "cnnx" and len(names) == 13 and "densenet201" in names
    # The console script's demo finds its packaged spec and checks it: a bad override is one
    # line and exit 2 before any Ray starts (a spec missing from the wheel would say so).
    demo = subprocess.run([str(venv / "bin" / "raybench"), "demo", "--results", "runs",
                           "--set", "train.epochs=0"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    spec_file = found["files"][1]
    assert demo.returncode == 2 and demo.stderr == (
        f"raybench: error: {spec_file} with --set: train.epochs must be > 0, got 0\n"), demo.stderr
    assert not (work / "runs").exists()
