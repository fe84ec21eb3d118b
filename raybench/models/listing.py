"""The zoo as a table (``raybench models``), and library models matching a pattern."""
from __future__ import annotations

from typing import Any, Optional

from raybench import schema as S
from raybench.models.table import MODELS, ModelSpec, get_model_spec
from raybench.models.zoo import meta_parameter_count


def _row(spec: ModelSpec, num_classes: int) -> dict[str, Any]:
    return {
        "name": spec.name, "paper_name": spec.paper_name, "source": spec.source,
        "arch": spec.arch, S.PARAMS: meta_parameter_count(spec.name, num_classes),
        "input_size": spec.input_size, "min_input_size": spec.min_input_size,
        "cam_layer": spec.cam_layer or f"none: {spec.cam_note}", "cam_method": spec.cam_method,
        "mean": list(spec.mean), "std": list(spec.std),
        "options": {o.name: o.default for o in spec.options},
        "tunable": list(spec.tunables),
    }


def model_table(num_classes: int = 4, search: Optional[str] = None,
                limit: Optional[int] = None) -> list[dict[str, Any]]:
    """One dict per model: name, paper name, parameters, input size, CAM layer.

    Args:
        num_classes: Head size the parameter counts assume.
        search: A shell pattern (``convnext*``): the library models it matches instead of the
            table. Each match is built on the ``meta`` device only (no weights allocated).
        limit: At most this many matches (the first in name order).
    """
    if search is None:
        return [_row(MODELS.get(name), num_classes) for name in MODELS]
    from raybench.models.generic import search as find

    names = find(search)[:limit] if limit else find(search)
    return [_row(get_model_spec(name), num_classes) for name in names]
