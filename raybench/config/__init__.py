"""Typed, frozen configuration: YAML spec files, ``--set a.b=c`` overrides and validation.

* :mod:`raybench.config.spec`: the dataclasses (:class:`Spec` and its sections), each field
  with its check (:mod:`raybench.config.fields`), ``to_dict``, ``dump_yaml``,
  ``with_absolute_paths``;
* :mod:`raybench.config.loader`: ``load_spec`` and ``from_dict`` (YAML, ``--set``, keys and
  types, close-match suggestions);
* :mod:`raybench.config.checks`: ``validate`` (rules across sections: scenarios, model options).
"""
from raybench.config.checks import validate
from raybench.config.fields import MAX_IMAGE_SIZE
from raybench.config.loader import from_dict, load_spec
from raybench.config.spec import (
    CamConfig,
    DataConfig,
    MlflowConfig,
    ModelConfig,
    ScalingSpec,
    SearchSpace,
    ROIS,
    Roi,
    Spec,
    SweepConfig,
    SynthConfig,
    TrackingConfig,
    TrainConfig,
    dump_yaml,
    to_dict,
    with_absolute_paths,
)

__all__ = ["CamConfig", "DataConfig", "MAX_IMAGE_SIZE", "MlflowConfig", "ModelConfig",
           "ROIS", "Roi", "ScalingSpec", "SearchSpace", "Spec", "SweepConfig", "SynthConfig", "TrackingConfig",
           "TrainConfig", "dump_yaml", "from_dict", "load_spec", "to_dict",
           "validate", "with_absolute_paths"]
