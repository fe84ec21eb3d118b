"""Runs the selected sections and formats their report.

To add a section, write ``raybench/bench/<name>.py`` with a ``bench_<name>(opts)`` function
returning a JSON-ready dict and a ``SECTION = Section(...)`` naming its headline keys, targets
and report lines (see :class:`raybench.bench.options.Section`), then list it in
:data:`SECTION_TABLE`.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Callable

from raybench.bench import analysis, cache, cam, data, results, sweep, train, trials
from raybench.bench.options import BenchOptions, Section, machine
from raybench.errors import ConfigError

log = logging.getLogger(__name__)

#: Every section, in the order they run and print.
SECTION_TABLE: tuple[Section, ...] = (train.SECTION, cache.SECTION, trials.SECTION, cam.SECTION,
                                      results.SECTION, sweep.SECTION, data.SECTION,
                                      analysis.SECTION)
_BY_NAME = {s.name: s for s in SECTION_TABLE}
SECTIONS = tuple(s.name for s in SECTION_TABLE if s.default)
#: Sections run only when asked for (``--only sweep``): the sweep comparison takes minutes.
EXTRA_SECTIONS = tuple(s.name for s in SECTION_TABLE if not s.default)


def _section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    log.info("bench: %s ...", name)
    start = time.perf_counter()
    out = fn()
    out["section_s"] = round(time.perf_counter() - start, 2)
    log.info("bench: %s done in %.1f s", name, out["section_s"])
    return out


def check_targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the measured value and whether it holds (``None``: not measured).

    The targets of default sections are always listed; those of a section run only when named
    are listed when it ran.
    """
    out = {}
    for section in SECTION_TABLE:
        if not section.default and section.name not in report:
            continue
        for key, (op, bound) in section.targets.items():
            value = report.get(key)
            met = None if value is None else (value >= bound if op == ">=" else value <= bound)
            out[key] = {"target": f"{op} {bound:g}", "value": value, "met": met}
    return out


def missed_targets(report: dict[str, Any]) -> list[str]:
    """The headline keys whose target was measured and missed (the CLI then exits 1)."""
    return [key for key, t in report.get("targets", {}).items() if t["met"] is False]


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Runs the selected sections; returns the JSON-ready report.

    Raises:
        ConfigError: An unknown section name, or a ``--data`` that cannot be read.
    """
    selected = opts.sections or SECTIONS
    unknown = [s for s in selected if s not in _BY_NAME]
    if unknown:
        raise ConfigError(f"unknown bench section(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(SECTIONS + EXTRA_SECTIONS)}")
    cache.check_data(opts.data)
    start = time.perf_counter()
    report: dict[str, Any] = {"machine": machine(), "quick": opts.quick}
    for section in SECTION_TABLE:
        if section.name in selected:
            report[section.name] = _section(section.name, functools.partial(section.run, opts))
        if section.name in selected or section.default:  # null when a default one is skipped
            part = report.get(section.name, {})
            report.update({key: part.get(inner) for key, inner in section.headline.items()})
    report["targets"] = check_targets(report)
    report["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    m = report["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, gpu {m['gpu'] or 'none'}, "
             f"load {m['loadavg'][0]:.1f} -> {m['loadavg_end'][0]:.1f}, torch {m['torch']}, "
             f"ray {m['ray']}"]
    for section in SECTION_TABLE:
        if section.name in report:
            lines += section.lines(report[section.name])
    for key, t in report["targets"].items():
        value = "not measured" if t["value"] is None else f"{t['value']:.3g}"
        verdict = {True: "ok", False: "MISSED", None: "-"}[t["met"]]
        lines.append(f"{key:<26} {value:>12}  target {t['target']:<8} {verdict}")
    return "\n".join(lines)
