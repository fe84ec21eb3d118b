"""Label rules: a multi-label set's findings -> the study's class, in order of precedence.

A rule such as ``covid19: [COVID-19]``, ``pneumonia: [Pneumonia, Lung Opacity]``,
``normal: [No Finding]`` gives an image the first class any of whose findings it has (findings
compared case-insensitively). Rows that match no class are left out and counted. CheXpert-style
uncertain findings (``-1.0``) follow a policy the user must choose (:data:`UNCERTAIN_POLICIES`):
``zeros`` (absent), ``ones`` (present) or ``ignore`` (a row whose class depends on an uncertain
finding is left out; an uncertain finding of a lower-precedence class does not matter).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Optional, Sequence

from raybench import schema as S
from raybench.data import manifest as mf
from raybench.errors import ConfigError, DataError

UNCERTAIN_POLICIES: tuple[str, ...] = ("ignore", "zeros", "ones")
#: Why a row was left out (keys of ``ImportResult.dropped``).
NO_CLASS = "no class"
UNCERTAIN = "uncertain"


def view_reason(view: Optional[str]) -> str:
    return f"view {view}" if view else "view unknown"


@dataclass(frozen=True)
class LabelRule:
    """``(class, findings)`` pairs in order of precedence (findings stored lower-case)."""

    classes: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> "LabelRule":
        """``(finding, class)`` pairs; a class ranks where it first appears."""
        order: dict[str, list[str]] = {}
        for finding, label in pairs:
            order.setdefault(label, []).append(finding.strip().lower())
        return cls(tuple((label, tuple(f)) for label, f in order.items()))

    def classify(self, positive: Collection[str], uncertain: Collection[str] = ()
                 ) -> tuple[Optional[str], str]:
        """``(class, "")``, or ``(None, reason)`` with reason :data:`NO_CLASS` / :data:`UNCERTAIN`."""
        for label, findings in self.sets:
            if not findings.isdisjoint(positive):
                return label, ""
            if uncertain and not findings.isdisjoint(uncertain):
                return None, UNCERTAIN
        return None, NO_CLASS

    @property
    def sets(self) -> tuple[tuple[str, frozenset[str]], ...]:
        sets = self.__dict__.get("_sets")
        if sets is None:  # built once: classify runs once per CSV row
            sets = tuple((label, frozenset(f)) for label, f in self.classes)
            object.__setattr__(self, "_sets", sets)
        return sets

    def describe(self) -> str:
        return "; ".join(f"{label}: {', '.join(f)}" for label, f in self.classes)


def _check_label(label: str, where: str) -> str:
    label = label.strip()
    if label not in S.MANIFEST_LABELS:
        raise DataError(f"{where}: {label!r} is not a label; allowed: "
                        f"{', '.join(S.MANIFEST_LABELS)}")
    return label


def rule_file_pairs(path: Path) -> list[tuple[str, str]]:
    """A YAML rule file: ``class: [finding, ...]`` (or ``class: finding``), highest first.

    Raises:
        DataError: Not a mapping of classes to findings, or a class that is not a label.
    """
    from raybench import safeyaml

    if not path.is_file():
        raise DataError(f"label rule file {path} does not exist")
    try:
        data = safeyaml.load_file(path)
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: a label rule is a mapping 'class: [finding, ...]', e.g. "
                        "'pneumonia: [Pneumonia, Lung Opacity]'")
    pairs = []
    for label, findings in data.items():
        label = _check_label(str(label), f"{path}: class")
        items = [findings] if isinstance(findings, str) else findings
        if not isinstance(items, list) or not items or not all(isinstance(f, str) for f in items):
            raise DataError(f"{path}: class {label!r}: expected a list of finding names, got "
                            f"{safeyaml.short(findings)}")
        pairs += [(f, label) for f in items]
    return pairs


def parse_label_map(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--label-map`` values -> ``(raw value or finding, label)`` pairs, in the order given.

    Each item is ``RAW=LABEL`` (or ``RAW -> LABEL``), or a ``.yaml`` / ``.yml`` rule file
    (:func:`rule_file_pairs`). The order is the rule's precedence.
    """
    pairs: list[tuple[str, str]] = []
    for item in items:
        if item.strip().lower().endswith((".yaml", ".yml")) and "=" not in item:
            pairs += rule_file_pairs(Path(item.strip()))
            continue
        raw, sep, label = item.partition("->") if "->" in item else item.partition("=")
        if not sep or not raw.strip():
            raise DataError(f"label map {item!r}: expected RAW=LABEL, e.g. 'COVID-19=covid19', "
                            "or a YAML rule file")
        pairs.append((raw.strip(), _check_label(label, f"label map {item!r}")))
    return tuple(pairs)


def check_uncertain(policy: Optional[str], kind: str) -> str:
    """The uncertainty policy of a kind with uncertain labels: given, and one of the allowed."""
    if policy is None:
        raise DataError(f"{kind}: uncertain findings (-1.0) need a policy: pass --uncertain "
                        f"{'|'.join(UNCERTAIN_POLICIES)} (ignore: leave out rows whose class "
                        "depends on one; zeros: absent; ones: present)")
    if policy not in UNCERTAIN_POLICIES:
        raise DataError(f"uncertain={policy!r}; allowed: {', '.join(UNCERTAIN_POLICIES)}")
    return policy


class Classifier:
    """Applies a rule, an uncertainty policy and a view filter to rows; counts what it drops."""

    def __init__(self, rule: LabelRule, views: Sequence[str] = (),
                 uncertain: Optional[str] = None) -> None:
        self.rule = rule
        self.views = frozenset(v for v in (mf.normalise_view(x) for x in views) if v)
        self.uncertain = uncertain
        self.dropped: Counter[str] = Counter()

    def view_ok(self, view: Optional[str]) -> bool:
        """False (counted) for a known view outside ``views``; an unknown view passes here and
        is decided once the file is read (a DICOM header may hold it)."""
        if not self.views or view is None or view in self.views:
            return True
        self.dropped[view_reason(view)] += 1
        return False

    def __call__(self, positive: Collection[str], uncertain: Collection[str] = ()
                 ) -> Optional[str]:
        if uncertain and self.uncertain == "ones":
            positive, uncertain = set(positive) | set(uncertain), ()
        elif self.uncertain != "ignore":
            uncertain = ()
        label, reason = self.rule.classify(positive, uncertain)
        if label is None:
            self.dropped[reason] += 1
        return label
