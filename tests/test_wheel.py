"""A wheel install works outside the checkout (issue 21.8).

Builds the wheel from a copy of the sources, installs it with ``--no-deps`` into a fresh venv
whose dependencies come from this environment's site-packages (a ``.pth`` line: the base
interpreter is pyenv's, so ``--system-site-packages`` would not see them), and runs
``raybench models`` and ``raybench demo`` from a folder outside the checkout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.slow
@pytest.mark.ray
def test_wheel_runs_models_and_demo_outside_the_checkout(tmp_path: Path) -> None:
    venv = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import raybench, raybench.cli as c; print(raybench.__file__); "
                            "print(c.DEMO_SPEC)"], cwd=work, env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where  # not the checkout's raybench
    models = subprocess.run([str(venv / "bin" / "raybench"), "models"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert models.returncode == 0, models.stderr
    names = [line.split()[0] for line in models.stdout.splitlines()[1:]]
    assert names[-1] == "cnnx" and len(names) == 13 and "densenet201" in names
    demo = subprocess.run([str(venv / "bin" / "raybench"), "demo", "--results", "runs",
                           "--num-cpus", "4", "--set", "train.epochs=1",  # one short trial
                           "--set", "data.synthetic.per_class=12", "--set", "sweep.models=[cnnx]",
                           "--set", "sweep.scenarios=[paper-1]"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (work / "runs" / "demo" / "report" / "report.html").stat().st_size > 1000
    assert "does not exist" not in demo.stderr
