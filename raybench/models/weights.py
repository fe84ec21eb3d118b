"""ImageNet weights: an explicit weights location first, then the standard caches.

Where raybench looks, in order:

1. ``weights_dir`` (a local folder or ``s3://`` prefix) holding ``<model>.pth``,
   ``<model>.safetensors`` or the upstream file name (e.g. ``resnet50-11ad3fa6.pth``). Seed it
   once for an air-gapped cluster.
2. The library's own cache: torchvision's ``$TORCH_HOME/hub/checkpoints`` or timm's Hugging Face
   cache (``$HF_HOME``); with ``HF_HUB_OFFLINE=1`` (or ``RAYBENCH_OFFLINE=1``) nothing is
   downloaded and only the caches are read.
3. A download by torchvision / timm, when online.

When none of these yields weights the error names the model and every place looked: raybench
never falls back to a random initialisation silently. Files are read with
``torch.load(weights_only=True)`` or safetensors, never by unpickling arbitrary objects.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Optional

import torch

from raybench import storage
from raybench.errors import RaybenchError

log = logging.getLogger(__name__)
StateDict = dict[str, torch.Tensor]


def offline() -> bool:
    """True when the environment forbids downloads."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "RAYBENCH_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _torchvision_url(arch: str) -> str:
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT.url


def candidate_names(spec) -> list[str]:
    """File names accepted in a weights folder for ``spec``."""
    names = [f"{spec.name}.pth", f"{spec.name}.pt", f"{spec.name}.safetensors"]
    if spec.source == "torchvision":
        names.append(os.path.basename(_torchvision_url(spec.arch)))
    elif spec.arch != spec.name:
        names += [f"{spec.arch}.pth", f"{spec.arch}.safetensors"]
    return names


def _decode(name: str, data: bytes) -> StateDict:
    if name.endswith(".safetensors"):
        from safetensors.torch import load

        return load(data)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RaybenchError(f"{name}: expected a state dict, got {type(state).__name__}")
    return state


def _from_weights_dir(spec, weights_dir: str, looked: list[str]) -> Optional[StateDict]:
    root = storage.resolve(weights_dir)
    for name in candidate_names(spec):
        loc = root.join(name)
        looked.append(loc.uri)
        try:
            if storage.exists(loc):
                log.info("loading %s weights from %s", spec.name, loc.uri)
                return _decode(name, storage.read_bytes(loc))
        except OSError as exc:
            raise RaybenchError(f"{spec.name}: cannot read weights at {loc.uri}: {exc}") from None
    return None


def _from_torchvision(spec, looked: list[str]) -> Optional[StateDict]:
    url = _torchvision_url(spec.arch)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    looked.append(str(cached))
    if cached.is_file():
        return _decode(cached.name, cached.read_bytes())
    if offline():
        return None
    looked.append(url)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                  weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any download failure means "not found here"
        log.warning("download of %s failed: %s", url, exc)
        return None


def _from_timm(spec, looked: list[str]) -> Optional[StateDict]:
    import timm

    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    looked.append(f"timm/Hugging Face cache for {spec.arch} under {hf_home}"
                  + (" (offline)" if offline() else " or its download"))
    try:
        model = timm.create_model(spec.arch, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - timm raises many types when weights are absent
        log.warning("timm could not load %s weights: %s", spec.arch, exc)
        return None
    return model.state_dict()


def load_imagenet_state_dict(spec, weights_dir: Optional[str] = None) -> StateDict:
    """The ImageNet state dict for ``spec`` (1000-class head), from the first place that has it.

    Raises:
        RaybenchError: No weights anywhere; the message lists every place looked.
    """
    looked: list[str] = []
    if weights_dir:
        state = _from_weights_dir(spec, weights_dir, looked)
        if state is not None:
            return state
    loaders = {"torchvision": _from_torchvision, "timm": _from_timm}
    if spec.source in loaders:
        state = loaders[spec.source](spec, looked)
        if state is not None:
            return state
    raise RaybenchError(
        f"no ImageNet weights for {spec.name}; looked in: {'; '.join(looked)}. "
        f"Put {spec.name}.pth in a weights_dir (model.weights_dir) or fill the cache"
    )
