"""Any timm or torchvision classifier by name: ``timm.<name>`` or ``torchvision.<name>``.

The name after the library's dot is the library's own (a timm name may carry its pretrained
tag: ``timm.convnext_tiny.fb_in22k``). Input size, normalisation and classifier come from the
library's config (timm's ``pretrained_cfg``, torchvision's default weights' transforms); the
CAM target is found from the model's structure (:mod:`raybench.models.camlayer`). The result
is an ordinary :class:`~raybench.models.table.ModelSpec`, made when first asked for and kept
for the process, so every command treats it like a table entry.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import logging
from typing import Any, Optional

import torch
from torch import nn

from raybench.errors import ConfigError
from raybench.models.camlayer import find_cam_target, head_module
from raybench.models.names import LIBRARIES, library_name
from raybench.models.table import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def library_models(library: str) -> tuple[str, ...]:
    """Every classifier name ``library`` offers (timm: architectures; torchvision: the
    classification models)."""
    if library == "timm":
        import timm

        return tuple(timm.list_models())
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _known(library: str, arch: str) -> bool:
    if library == "timm":
        import timm

        return bool(timm.is_model(arch.split(".")[0])) and _timm_tag_known(arch)
    return arch in library_models(library)


def _timm_tag_known(arch: str) -> bool:
    import timm

    return "." not in arch or timm.models.get_pretrained_cfg(arch, allow_unregistered=False) is not None


def name_problem(name: str) -> Optional[str]:
    """Why ``name`` (``<library>.<arch>``) names no model, with a close match; ``None`` if it does."""
    parsed = library_name(name)
    if parsed is None:
        return f"{name!r} is not <library>.<name> with library one of {', '.join(LIBRARIES)}"
    library, arch = parsed
    try:
        if _known(library, arch):
            return None
    except RuntimeError:  # timm: an unknown pretrained tag
        pass
    close = difflib.get_close_matches(arch, library_models(library), n=1, cutoff=0.7)
    hint = f" (did you mean '{library}.{close[0]}'?)" if close else ""
    return (f"unknown {library} model {arch!r}{hint}; list them with "
            f"raybench models --search '{arch.split('_')[0]}*'")


def _create(library: str, arch: str, on_meta: bool) -> nn.Module:
    """The ImageNet-shaped model; on the meta device when asked and possible."""
    def make() -> nn.Module:
        if library == "timm":
            import timm

            return timm.create_model(arch, pretrained=False)
        import torchvision

        return torchvision.models.get_model(arch, weights=None)

    if on_meta:
        try:
            with torch.device("meta"):
                return make()
        except (NotImplementedError, RuntimeError) as exc:  # an initialiser that reads values
            log.debug("%s.%s cannot be built on the meta device (%s); building on the CPU",
                      library, arch, exc)
    return make()


def _config(library: str, arch: str, model: nn.Module) -> dict[str, Any]:
    """Input size, normalisation, resolved arch (timm adds its tag) from the library's config."""
    if library == "timm":
        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        tag = cfg.get("tag")
        resolved = arch if "." in arch or not tag else f"{arch}.{tag}"
        return {"input_size": int(cfg.get("input_size", (3, 224, 224))[-1]),
                "mean": tuple(cfg.get("mean", IMAGENET_MEAN)),
                "std": tuple(cfg.get("std", IMAGENET_STD)),
                "min_input_size": int((cfg.get("min_input_size") or (3, 32, 32))[-1]),
                "arch": resolved}
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):  # a model without published weights
        return {"input_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "min_input_size": 32, "arch": arch}
    tf = weights.transforms()
    return {"input_size": int(tf.crop_size[0]), "mean": tuple(tf.mean), "std": tuple(tf.std),
            "min_input_size": max(32, int(weights.meta.get("min_size", (32, 32))[0])),
            "arch": arch}


@functools.lru_cache(maxsize=None)
def library_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a library model (``timm.convnext_tiny``).

    Raises:
        ConfigError: The library has no model of that name (with a close match).
    """
    problem = name_problem(name)
    if problem:
        raise ConfigError(problem)
    library, arch = library_name(name)  # type: ignore[misc]  # checked by name_problem
    model = _create(library, arch, on_meta=True)
    cfg = _config(library, arch, model)
    target = find_cam_target(model, cfg["input_size"])
    head = head_module(model)[0] if library == "torchvision" else ""
    return ModelSpec(name, name, library, cfg["arch"], target.layer, head=head,
                     cam_method=target.method, cam_activation=target.activation,
                     input_size=cfg["input_size"], min_input_size=cfg["min_input_size"],
                     mean=cfg["mean"], std=cfg["std"], cam_tokens=target.tokens,
                     aux_heads=library == "torchvision" and bool(getattr(model, "aux_logits", 0)),
                     cam_note=target.note)




def search(pattern: str) -> list[str]:
    """``<library>.<name>`` of every library model matching the shell pattern ``pattern``
    (``convnext*``; ``timm.convnext*`` limits the search to one library)."""
    out = []
    for library in LIBRARIES:
        prefix = f"{library}."
        for arch in library_models(library):
            full = prefix + arch
            if fnmatch.fnmatchcase(arch, pattern) or fnmatch.fnmatchcase(full, pattern):
                out.append(full)
    return out
