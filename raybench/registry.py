"""A tiny keyed registry: one per concept (models, scenarios, search spaces, CAM methods).

Registries are filled at import time only, because Ray workers re-import modules and must see
the same entries as the driver.
"""
from __future__ import annotations

import difflib
import importlib
import re
from typing import Any, Generic, Iterator, TypeVar

from raybench.errors import ConfigError

T = TypeVar("T")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(Generic[T]):
    """Maps snake_case keys to entries of one kind.

    Args:
        kind: What the entries are (used in error messages), e.g. ``"model"``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, key: str, item: T) -> T:
        """Adds ``item`` under ``key``; a duplicate or non-snake_case key raises ``ValueError``."""
        if not _KEY.match(key):
            raise ValueError(f"{self.kind} key {key!r} is not snake_case")
        if key in self._items:
            raise ValueError(f"{self.kind} {key!r} is registered twice")
        self._items[key] = item
        return item

    def get(self, key: str) -> T:
        """Returns the entry for ``key``; an unknown key raises ``ConfigError`` listing valid keys."""
        try:
            return self._items[key]
        except (KeyError, TypeError):
            raise ConfigError(self.unknown_message(key)) from None

    def unknown_message(self, key: object) -> str:
        """The one-line message for an unknown key, with a close match when there is one."""
        close = difflib.get_close_matches(str(key), list(self._items), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {key!r}{hint}; valid: {', '.join(self._items)}"

    def keys(self) -> list[str]:
        """All keys, in registration order."""
        return list(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def load_ref(ref: str) -> Any:
    """The object a ``module:attribute`` reference names, importing the module now.

    Registries name heavy entries (torch builders, CAM functions) this way, so filling and
    reading them stays cheap; only the code that runs an entry imports its module.
    """
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
