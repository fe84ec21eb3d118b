"""Spec rules that span sections or read a registry (fields check themselves on construction)."""
from __future__ import annotations

import importlib.util

from raybench.catalog.scenarios import get_scenario
from raybench.config.spec import Spec
from raybench.errors import ConfigError
from raybench.models import names as model_names
from raybench.safeyaml import short


def validate(spec: Spec, where: str = "spec") -> None:
    """The rules that span sections or need a registry beyond the fields' own checks.

    Each field checks its own value when the spec is built (:mod:`raybench.config.fields`);
    this adds: scenarios exist (the scenario registry, or a scenario file), every model option
    belongs to one of the spec's models and builds at its image size, and MLflow is installed
    when the spec turns it on.

    Raises:
        ConfigError: Naming the key, the bad value (a short prefix of it) and what is allowed.
    """
    if spec.data.scenario:
        _check_scenario(spec.data.scenario, where, "data.scenario")
    for i, name in enumerate(spec.sweep.scenarios):
        _check_scenario(name, where, f"sweep.scenarios[{i}]")
    _validate_model_options(spec, where)
    if spec.model.weights and spec.model.pretrained:
        raise ConfigError(f"{where}: model.pretrained=true and model.weights both choose the "
                          "starting weights; set one")
    if spec.tracking.mlflow.tracking_uri is not None and importlib.util.find_spec("mlflow") is None:
        raise ConfigError(f"{where}: tracking.mlflow needs the mlflow package, which is not "
                          "installed: pip install 'raybench[tracking]'")


def _check_scenario(name: str, where: str, key: str) -> None:
    try:
        get_scenario(name)  # an unknown name fails here, listing the valid ones
    except ConfigError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None


def _validate_model_options(spec: Spec, where: str) -> None:
    """Every option the spec sets belongs to one of its models, and every value it can
    produce (searched ones included) builds at the spec's image size."""
    names = dict.fromkeys((spec.model.name,) + spec.sweep.models)
    declared = {o.name for n in names for o in model_names.options_of(n)}
    for section, keys in (("model.options", spec.model.options),
                          ("sweep.space.options", spec.sweep.space.options)):
        for key in keys:
            if key not in declared:
                raise ConfigError(f"{where}: {section}.{key}: no model of this spec has an option "
                                  f"{short(key)}; their options: {', '.join(sorted(declared)) or 'none'}")
    for name in names:
        # 224: the default input of every model that has options; build_model checks again
        # with the model's real size.
        size = spec.model.image_size or 224
        for values in _option_values(spec, name):
            try:
                model_names.check_options(name, values, size)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None


def _option_values(spec: Spec, name: str) -> list[dict[str, int]]:
    """The option settings of model ``name`` the spec can produce: its own, plus each searched
    value of each tunable option in ``optuna`` mode."""
    own = model_names.applicable(name, spec.model.options)
    settings = [own]
    if spec.sweep.mode == "optuna" and name in spec.sweep.models:
        for opt in model_names.options_of(name):
            for value in spec.sweep.space.options.get(opt.name, opt.search):
                settings.append({**own, opt.name: value})
    return settings
