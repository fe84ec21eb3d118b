"""raybench: reproducible, distributed CNN benchmarks on chest X-rays, with CAM explanations.

The notebook API, imported on first use (PEP 562) so that ``import raybench`` stays cheap:
no torch, no Ray.

>>> import raybench
>>> res = raybench.load("runs", sweep="demo")       # a Results: .runs .metrics .epochs ...
>>> res.paper_table("paper-3")
>>> raybench.write_report("runs", "demo", "report/")
>>> spec = raybench.load_spec("jobs/demo.yaml", ["train.epochs=2"])

``compute_cams`` (and only it) imports torch, when it is first used.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raybench.camset import CamSet
    from raybench.cam.methods import compute_cams
    from raybench.config import load_spec
    from raybench.report import write_report
    from raybench.results.loading import Results, load

from raybench.version import __version__ as __version__  # noqa: E402 (re-exported)

#: Public name -> the module that defines it.
_SOURCES = {
    "load": "raybench.results.loading",
    "Results": "raybench.results.loading",
    "write_report": "raybench.report",
    "compute_cams": "raybench.cam.methods",
    "CamSet": "raybench.camset",
    "load_spec": "raybench.config",
}

__all__ = ["CamSet", "Results", "compute_cams", "load", "load_spec", "write_report"]


def __getattr__(name: str) -> Any:
    """Imports the module that defines ``name`` on first access (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(f"module 'raybench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
