"""The zoo as a table (``raybench models``)."""
from __future__ import annotations

from typing import Any

from raybench import schema as S
from raybench.models.table import MODELS
from raybench.models.zoo import meta_parameter_count


def model_table(num_classes: int = 4) -> list[dict[str, Any]]:
    """One dict per registered model: name, paper name, parameters, input size, CAM layer."""
    rows = []
    for name in MODELS:
        spec = MODELS.get(name)
        rows.append({
            "name": name, "paper_name": spec.paper_name, "source": spec.source,
            "arch": spec.arch, S.PARAMS: meta_parameter_count(name, num_classes),
            "input_size": spec.input_size, "min_input_size": spec.min_input_size,
            "cam_layer": spec.cam_layer, "cam_method": spec.cam_method,
            "mean": list(spec.mean), "std": list(spec.std),
            "options": {o.name: o.default for o in spec.options},
            "tunable": list(spec.tunables),
        })
    return rows
