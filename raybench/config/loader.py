"""The spec loader: YAML files, ``--set a.b=c`` overrides, keys and types checked.

A spec file is YAML whose keys mirror the dataclass fields; unknown keys (with a close-match
suggestion), wrong types and out-of-range values fail at load time with the file, the key and
what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Optional

from raybench import safeyaml
from raybench.config.checks import validate
from raybench.config.fields import FieldError, choice_problem, literal_choices
from raybench.config.spec import Spec
from raybench.errors import ConfigError
from raybench.safeyaml import short


def load_spec(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Loads a YAML spec (or the defaults) and applies ``key=value`` overrides.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: ``a.b=c`` strings; values are parsed as YAML scalars (``3e-4``, ``true``).

    Raises:
        ConfigError: Unreadable or malformed file, unknown key, wrong type, invalid value.
    """
    raw = _read_yaml(Path(path)) if path else {}
    for item in overrides:
        _apply_override(raw, item)
    where = str(path) if path else "--set"
    if path and overrides:
        where = f"{path} with --set"
    spec = from_dict(Spec, raw, where=where)
    validate(spec, where=where)
    return spec


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"spec file {path} does not exist")
    data = safeyaml.load_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a spec must be a mapping of keys, got {type(data).__name__}")
    return data


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {short(item)}: expected key=value, e.g. train.lr=1e-3")
    try:
        value = safeyaml.safe_load(text, f"--set {key.strip()}") if text.strip() else None
    except ConfigError as exc:
        if "YAML syntax error" not in str(exc):
            raise
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {short(item)}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


#: Keys that moved, so an old spec gets the new name instead of "unknown key".
_RENAMED = {"model.cnnx_stride": "model.options.stride",
            "sweep.space.cnnx_strides": "sweep.space.options.stride"}


def from_dict(cls: type, data: Any, where: str = "spec", prefix: str = "") -> Any:
    """Builds dataclass ``cls`` from a nested mapping, checking keys and types.

    Raises:
        ConfigError: Naming the key path, the source and what is allowed.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'spec'} must be a mapping, got {short(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if prefix + str(key) in _RENAMED:
            raise ConfigError(f"{where}: {prefix + str(key)!r} is now "
                              f"{_RENAMED[prefix + str(key)]!r}")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}: unknown key {prefix + str(key)!r}{hint}; allowed: {', '.join(names)}"
            )
    kwargs = {k: _convert(hints[k], v, where, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except FieldError as exc:  # a field's own check (raybench.config.fields)
        raise ConfigError(f"{where}: {prefix}{exc.key}{exc.problem}") from None


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for alternative in args[1:]:  # e.g. gpus_per_worker: a number, or the word auto
            try:
                return _convert(alternative, value, where, key)
            except ConfigError:
                continue
        try:
            return _convert(args[0], value, where, key)
        except ConfigError:
            if len(args) == 1:  # Optional[X]: X's own message
                raise
            kinds = [" or ".join(map(str, literal_choices(a) or ())) or a.__name__ for a in args]
            raise ConfigError(f"{where}: {key} must be {' or '.join(kinds)}, got "
                              f"{short(value)}") from None
    allowed = literal_choices(tp)
    if allowed is not None:
        problem = choice_problem(value, allowed)
        if problem:
            raise ConfigError(f"{where}: {key}{problem}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, prefix=f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {short(value)}")
        inner = typing.get_args(tp)[1]
        return {str(k): _convert(inner, v, where, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {short(value)}")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value))
    return _scalar(tp, value, where, key)


def _scalar(tp: Any, value: Any, where: str, key: str) -> Any:
    number: Optional[float] = None
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif tp is float and isinstance(value, str):
        try:
            number = float(value)  # YAML 1.1 reads "3e-4" as a string
        except ValueError:
            pass
    if number is not None:
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {key} must be a finite number, got {short(value)}")
        return number
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: {key} must be {tp.__name__}, got {short(value)}")
