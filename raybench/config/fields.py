"""Checks that sit beside the fields they guard.

A spec field declares its check where it is defined::

    epochs: int = positive(20)
    roi: Roi = "full"                       # a Literal type: the choices are the type

:class:`Checked` (the base of every spec dataclass) runs them in ``__post_init__``, so a spec
built from YAML, from ``--set`` or in code (``dataclasses.replace(cfg, lr=-1)``) fails the same
way. A failure raises :class:`FieldError`; the loader prefixes the file and the key path.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Optional, Sequence

from raybench.errors import ConfigError
from raybench.safeyaml import short

#: ``check(value)`` -> what is wrong with ``value`` (``"must be > 0, got 0"``), or ``None``.
Check = Callable[[Any], Optional[str]]

#: Largest input side accepted (pixels). The decoded cache holds every image at this size
#: (10,000 images at 1024 px are 10 GB) and activations grow with its square: a VGG-16 batch
#: of 15 at 1024 px needs over 40 GB; the paper's models are built for 224-299 px.
MAX_IMAGE_SIZE = 1024


class FieldError(ConfigError):
    """A spec field holds a value its check refuses.

    Attributes:
        key: The field's name (the loader prefixes its section: ``train.epochs``).
        problem: The rest of the message, e.g. ``" must be > 0, got 0"``.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}{problem}")
        self.key, self.problem = key, problem


def checked(default: Any = dataclasses.MISSING, check: Optional[Check] = None,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value ``check`` guards (see :class:`Checked`)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"check": check})


def _positive(value: Any) -> Optional[str]:
    return None if value > 0 else f" must be > 0, got {value!r}"


def _non_negative(value: Any) -> Optional[str]:
    return None if value >= 0 else f" must be >= 0, got {value!r}"


def _at_least_one(value: Any) -> Optional[str]:
    if value is None or value >= 1:
        return None
    return f" must be >= 1 (or left unset), got {value!r}"


def positive(default: Any) -> Any:
    """A number that must be > 0."""
    return checked(default, _positive)


def non_negative(default: Any) -> Any:
    """A number that must be >= 0."""
    return checked(default, _non_negative)


def at_least_one(default: Any = None) -> Any:
    """An optional number that must be >= 1 when set."""
    return checked(default, _at_least_one)


def fraction(default: float, closed: bool = False) -> Any:
    """A share in [0, 1) (``closed``: [0, 1])."""
    def check(value: float) -> Optional[str]:
        if 0.0 <= value < 1.0 or (closed and value == 1.0):
            return None
        return f" must be in [0, 1{']' if closed else ')'}, got {value!r}"

    return checked(default, check)


def image_side(default: Optional[int], low: int) -> Any:
    """An optional image side in [``low``, :data:`MAX_IMAGE_SIZE`] pixels."""
    def check(size: Optional[int]) -> Optional[str]:
        if size is None or low <= size <= MAX_IMAGE_SIZE:
            return None
        return (f" must be in [{low}, {MAX_IMAGE_SIZE}] px, got {size} (larger inputs multiply "
                "cache and GPU memory; the paper's models use 224-299 px)")

    return checked(default, check)


def distinct(default_factory: Callable[[], Any], item: Optional[Check] = None,
             if_empty: Optional[str] = None) -> Any:
    """A list with no empty and no repeated entries, each passing ``item`` when given.

    A repeat would run or count the same thing twice. ``if_empty``: the problem of an empty
    list (``None``: an empty list is fine).
    """
    def check(values: tuple[Any, ...]) -> Optional[str]:
        if if_empty and not values:
            return if_empty
        for i, value in enumerate(values):
            if value is None or (isinstance(value, str) and not value.strip()):
                return f"[{i}] is empty"
            if value in values[:i]:
                return f" lists {short(value)} twice; each entry once"
            problem = item(value) if item else None
            if problem:
                return problem
        return None

    return checked(check=check, default_factory=default_factory)


def choice_problem(value: Any, allowed: Sequence[Any]) -> Optional[str]:
    """``"=<value>; allowed: a, b"`` when ``value`` is not one of ``allowed``."""
    if value in allowed:
        return None
    return f"={short(value)}; allowed: {', '.join(str(a) for a in allowed)}"


def literal_choices(tp: Any) -> Optional[tuple[Any, ...]]:
    """The values of a ``Literal[...]`` type (also inside ``Optional``), else ``None``."""
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    return None


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """``cls``'s resolved field types (resolved once per class: specs are built per trial)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


class Checked:
    """Runs each field's check, and the choices of ``Literal`` fields, after ``__init__``.

    A subclass adds cross-field rules in :meth:`check_fields` (call ``super()`` first).
    """

    def __post_init__(self) -> None:
        self.check_fields()

    def check_fields(self) -> None:
        """Raises :class:`FieldError` for the first field whose value is refused."""
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            value = getattr(self, f.name)
            allowed = literal_choices(hints[f.name])
            problem = choice_problem(value, allowed) if allowed else None
            check = f.metadata.get("check")
            problem = problem or (check(value) if check else None)
            if problem:
                raise FieldError(f.name, problem)
