"""The scenario table: which scenarios exist (the paper's three) and how a scenario file reads.

Torch- and pandas-free, so spec validation (:mod:`raybench.config`) checks scenario names and
files without importing the data pipeline; :mod:`raybench.data.scenarios` builds them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from raybench import safeyaml
from raybench import schema as S
from raybench.errors import ConfigError
from raybench.registry import Registry


@dataclass(frozen=True)
class ScenarioSpec:
    """A scenario, as data.

    Attributes:
        name: Registry key or the user's name for it.
        classes: Class names in class-index order (manifest labels or merge targets).
        merge: ``(manifest label, class)`` pairs; unlisted labels map to themselves.
        caps: ``(class, n)``: at most ``n`` training + validation images of that class,
            chosen by whole patients with a seeded shuffle; the test set is never capped.
        test_from: A source name or a manifest path whose images form the test set.
        description: One line for listings and the built summary.
        paper_counts: The paper's ``{split: {class: n}}`` for comparison (train, test).
    """

    name: str
    classes: tuple[str, ...]
    merge: tuple[tuple[str, str], ...] = ()
    caps: tuple[tuple[str, int], ...] = ()
    test_from: Optional[str] = None
    description: str = ""
    paper_counts: Optional[Mapping[str, Mapping[str, int]]] = None

    def __post_init__(self) -> None:
        _check_spec(self)

    def class_of(self, label: str) -> Optional[str]:
        """The class a manifest label feeds, or None when the scenario does not use it."""
        target = dict(self.merge).get(label, label)
        return target if target in self.classes else None


def _check_spec(spec: ScenarioSpec) -> None:
    where = f"scenario {spec.name!r}"
    if len(spec.classes) < 2 or len(set(spec.classes)) != len(spec.classes):
        raise ConfigError(f"{where}: classes={list(spec.classes)}; need >= 2 distinct classes")
    targets = {t for _, t in spec.merge}
    for label, target in spec.merge:
        if label not in S.MANIFEST_LABELS:
            raise ConfigError(f"{where}: merge source {label!r} is not a manifest label; "
                              f"allowed: {', '.join(S.MANIFEST_LABELS)}")
        if target not in spec.classes:
            raise ConfigError(f"{where}: merge target {target!r} is not in classes "
                              f"{list(spec.classes)}")
    for cls in spec.classes:
        if cls not in S.MANIFEST_LABELS and cls not in targets:
            raise ConfigError(f"{where}: class {cls!r} is neither a manifest label "
                              f"({', '.join(S.MANIFEST_LABELS)}) nor a merge target")
    for cls, cap in spec.caps:
        if cls not in spec.classes or not isinstance(cap, int) or cap <= 0:
            raise ConfigError(f"{where}: cap {cls}={cap!r}; caps need a class of the scenario "
                              "and a positive integer")


# --- registry ---------------------------------------------------------------------------------

SCENARIOS: Registry[ScenarioSpec] = Registry(S.SCENARIO)
_FOUR = ("normal", "bacteria", "viral", "covid19")
_PAPER_TEST = {"normal": 234, "bacteria": 242, "viral": 148, "covid19": 43}
SCENARIOS.register("paper_1", ScenarioSpec(
    "paper_1", ("normal", "covid19"),
    description="normal vs COVID-19 (the paper tests on another COVID source)",
    paper_counts={"train": {"normal": 1341, "covid19": 111},
                  "test": {"normal": 234, "covid19": 43}}))
SCENARIOS.register("paper_2", ScenarioSpec(
    "paper_2", _FOUR, description="4 classes, all data",
    paper_counts={"train": {"normal": 1575, "bacteria": 2771, "viral": 1494, "covid19": 111},
                  "test": _PAPER_TEST}))
SCENARIOS.register("paper_3", ScenarioSpec(
    "paper_3", _FOUR, caps=(("normal", 350), ("bacteria", 350), ("viral", 350)),
    description="4 classes, at most 350 training images per non-COVID class, all COVID",
    paper_counts={"train": {"normal": 350, "bacteria": 350, "viral": 350, "covid19": 111},
                  "test": _PAPER_TEST}))


def scenario_from_dict(data: Mapping[str, Any], where: str = "scenario spec") -> ScenarioSpec:
    """Builds a spec from YAML-like data: ``{name, classes, merge: {a: b}, caps: {c: n}, test_from}``.

    Raises:
        ConfigError: Unknown keys or invalid values, naming ``where``.
    """
    allowed = {"name", "classes", "merge", "caps", S.TEST_FROM, "description"}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: a scenario must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"allowed: {', '.join(sorted(allowed))}")
    try:
        return ScenarioSpec(
            name=str(data.get("name", Path(where).stem)),
            classes=tuple(str(c) for c in data["classes"]),
            merge=tuple((str(k), str(v)) for k, v in dict(data.get("merge") or {}).items()),
            caps=tuple((str(k), v) for k, v in dict(data.get("caps") or {}).items()),
            test_from=data.get(S.TEST_FROM),
            description=str(data.get("description", "")))
    except KeyError:
        raise ConfigError(f"{where}: 'classes' is required (a list of class names)") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: malformed scenario ({exc})") from None


def get_scenario(name: str) -> ScenarioSpec:
    """A registered scenario (``paper-2`` == ``paper_2``) or a YAML scenario file.

    Raises:
        ConfigError: Unknown name (listing the registered ones) or a bad file.
    """
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"scenario file {path} does not exist")
        return scenario_from_dict(safeyaml.load_file(path), where=str(path))
    return SCENARIOS.get(name.replace("-", "_"))
