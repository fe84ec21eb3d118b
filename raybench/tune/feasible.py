"""The search space checked against the data before anything trains.

Each cell's training-split size comes from its manifest and split rules, without decoding an
image (:func:`raybench.data.dataset.split_sizes`). A batch larger than a cell's training split
would fail that trial at run time, after the others had spent their time, so:

* ``paper`` mode: a ``train.batch_size`` some cell cannot take is one line naming the key, the
  value and the cell (exit 2), before Ray starts;
* ``optuna`` mode: a ``sweep.space.batch_sizes`` value no cell can take is the same one line;
  a value only some cells cannot take is left out of those cells' spaces (logged once per
  value), and a cell left with no batch size at all is refused. The default list (not set in
  the spec) is trimmed to what each cell takes, with the same log line, and never refused for
  a value: small data (the smoke and demo specs) cannot take its 64.
"""
from __future__ import annotations

import dataclasses
import logging

from raybench.config import SearchSpace, Spec
from raybench.errors import ConfigError
from raybench.trial import Cell, cell_spec, cells

log = logging.getLogger(__name__)


def train_sizes(spec: Spec) -> dict[str, int]:
    """Training images per cell, by cell name (cells sharing a data config are read once)."""
    from raybench.data.dataset import split_sizes

    sizes: dict[str, int] = {}
    seen: dict[object, int] = {}
    for cell in cells(spec):
        data = dataclasses.replace(cell_spec(spec, cell).data, roi="full")  # roi hides pixels
        if data not in seen:
            seen[data] = split_sizes(data)["train"]
        sizes[cell.name] = seen[data]
    return sizes


def _refuse(key: str, value: int, cell: Cell, size: int) -> ConfigError:
    return ConfigError(f"{key}={value} is larger than the training split of cell {cell.name} "
                       f"({size} images); use at most {size}")


def batch_sizes(spec: Spec, sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """The batch sizes each cell may try (paper mode: the spec's one), by cell name.

    Raises:
        ConfigError: A value no cell can take, a paper batch some cell cannot take, or a cell
            with no batch size left (one line: key, value, cell).
    """
    all_cells = cells(spec)
    if spec.sweep.mode == "paper":
        value = spec.train.batch_size
        for cell in all_cells:
            if value > sizes[cell.name]:
                raise _refuse("train.batch_size", value, cell, sizes[cell.name])
        return {c.name: (value,) for c in all_cells}
    space = spec.sweep.space.batch_sizes
    given = space != SearchSpace().batch_sizes
    for value in space:
        too_small = [c for c in all_cells if value > sizes[c.name]]
        if len(too_small) == len(all_cells) and given:
            cell = min(too_small, key=lambda c: sizes[c.name])
            raise _refuse("sweep.space.batch_sizes", value, cell, sizes[cell.name])
        if too_small:
            log.info("sweep.space.batch_sizes: %d left out of %d cell(s) whose training split "
                     "is smaller (%s)", value, len(too_small),
                     ", ".join(f"{c.name}: {sizes[c.name]}" for c in too_small[:5])
                     + (", ..." if len(too_small) > 5 else ""))
    allowed = {c.name: tuple(v for v in space if v <= sizes[c.name]) for c in all_cells}
    for cell in all_cells:
        if not allowed[cell.name]:
            raise _refuse("sweep.space.batch_sizes", min(space), cell, sizes[cell.name])
    return allowed
