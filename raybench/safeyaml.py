"""Bounded YAML: safe types only, no duplicate keys, no alias bombs, no huge files.

``yaml.safe_load`` alone accepts a mapping that lists a key twice (the last one silently wins)
and a "billion laughs" document whose aliases expand to billions of nodes: PyYAML shares the
aliased objects, so parsing is cheap, but anything that walks the result (validation, YAML
dumps, ``dataclasses.asdict``) expands it. :func:`safe_load` counts the nodes a document expands to
(in time linear in its size, whatever the nesting) and refuses one beyond :data:`MAX_NODES`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from raybench.errors import ConfigError

#: Largest spec or scenario file read, in bytes (real specs are a few hundred bytes).
MAX_BYTES = 1 << 20
#: Most nodes (scalars, lists, mappings) a document may expand to once its aliases are followed.
MAX_NODES = 100_000
#: Characters of a bad value quoted in an error message.
QUOTE_CHARS = 60


def short(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (a bad value may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and documents that expand beyond MAX_NODES."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise ConfigError(f"line {line}: duplicate key {short(key)} (first on line "
                                      f"{seen[key]})")
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader reports it below
                break
        return super().construct_mapping(node, deep=deep)

    def compose_document(self) -> Optional[yaml.Node]:
        node = super().compose_document()  # type: ignore[no-untyped-call]
        expanded = _expanded_size(node, {}, set()) if node is not None else 0
        if expanded > MAX_NODES:
            raise ConfigError(f"aliases expand to over {MAX_NODES:,} nodes; refusing "
                              "(a YAML alias bomb?)")
        return node


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Nodes under ``node`` with every alias followed; memoised, so shared subtrees cost once."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ConfigError(f"line {node.start_mark.line + 1}: a recursive alias (a node that "
                          "contains itself)")
    active.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_size(child, memo, active)
            if total > MAX_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, memo, active) + _expanded_size(v, memo, active)
            if total > MAX_NODES:
                break
    active.discard(key)
    memo[key] = total
    return total


def safe_load(text: str, where: str) -> Any:
    """Parses one YAML document with the bounds above.

    Args:
        text: The document.
        where: Its origin (a file name), the prefix of every error message.

    Raises:
        ConfigError: Syntax error (with its line), duplicate key, alias bomb, oversized text.
    """
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters; a spec is at most {MAX_BYTES:,}")
    try:
        loader = _Loader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}{line}: YAML syntax error: {problem}") from None


def load_file(path: Path) -> Any:
    """Reads and parses a YAML file; a missing, unreadable or oversized file is a ConfigError."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ConfigError(f"{path} is not a file")
        if size > MAX_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes; a spec is at most {MAX_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return safe_load(text, str(path))
