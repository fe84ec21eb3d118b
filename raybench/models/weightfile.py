"""``model.weights``: a weights file (an X-ray-pretrained backbone) instead of ImageNet's.

The file (a local path or ``s3://`` URI) is a PyTorch state dict read with
``torch.load(weights_only=True)``, or a ``.safetensors`` file. Its keys are mapped onto the
model by these rules, in order (README, "Your own weights"):

1. A checkpoint dict holding its weights under ``state_dict``, ``model_state`` or ``model`` is
   unwrapped to that dict.
2. A ``module.`` (DDP / DataParallel) or ``model.`` (Lightning, timm's EMA wrapper) prefix that
   every key carries is stripped, repeatedly.
3. Keys of the classifier head (the layer raybench replaces) and of auxiliary heads the model
   drops are ignored: the backbone comes from the file, the head is new.
4. A one-channel stem (a 4-D weight whose file shape has 1 input channel where the model has
   3) is repeated over the 3 channels and divided by 3, so a grey image replicated to RGB gives
   the one-channel network's activations exactly.
5. BatchNorm's ``num_batches_tracked`` may be absent (older checkpoints); every other model key
   must be in the file with its shape and every file key must be used. Otherwise the file does
   not fit: one line with the counts and first keys of each kind, exit 2.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from raybench import storage
from raybench.errors import ConfigError

StateDict = dict[str, torch.Tensor]
#: Checkpoint keys that hold the state dict itself (rule 1).
WRAPPER_KEYS = ("state_dict", "model_state", "model")
#: Key prefixes stripped when every key carries one (rule 2).
PREFIXES = ("module.", "model.")
_AUX_HEADS = ("aux1.", "aux2.", "AuxLogits.")
_SHOWN = 3


def decode_state(where: str, data: bytes) -> StateDict:
    """The state dict in a file's bytes (rule 1 applied); anything else raises ``ConfigError``."""
    if where.endswith(".safetensors"):
        from safetensors.torch import load

        return load(data)
    try:
        state: Any = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{where}: not a state dict torch.load(weights_only=True) can read "
                          f"({reason[:160]})") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ConfigError(f"{where}: expected a state dict (name -> tensor), got "
                          f"{type(state).__name__}")
    odd = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise ConfigError(f"{where}: not a state dict: {len(odd)} of its entries are not tensors "
                          f"(first: {str(odd[0])[:60]!r})")
    return state


@dataclass(frozen=True)
class WeightsFile:
    """A read weights file: its state dict and the SHA-256 of its bytes."""

    uri: str
    state: StateDict
    sha256: str


_READ: dict[str, WeightsFile] = {}


def read_weights(uri: str) -> WeightsFile:
    """Reads (once per process) and decodes the file at ``uri``.

    Raises:
        ConfigError: Missing or unreadable file, or not a state dict.
    """
    if uri not in _READ:
        try:
            data = storage.read_bytes(storage.resolve(uri))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.weights: cannot read {uri}: {exc}") from None
        _READ.clear()  # one file's tensors kept at a time
        _READ[uri] = WeightsFile(uri, decode_state(uri, data), hashlib.sha256(data).hexdigest())
    return _READ[uri]


def file_sha256(uri: Optional[str]) -> Optional[str]:
    """The SHA-256 of the weights file ``uri`` (``None`` without one)."""
    return read_weights(uri).sha256 if uri else None


def strip_prefixes(state: StateDict) -> StateDict:
    """Rule 2: drops a ``module.`` / ``model.`` prefix that every key carries, repeatedly."""
    while state:
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _stem_fit(mine: torch.Tensor, theirs: torch.Tensor) -> Optional[torch.Tensor]:
    """Rule 4: a one-channel stem weight as a three-channel one (or ``None``)."""
    if (theirs.dim() == 4 and mine.dim() == 4 and theirs.shape[1] == 1 and mine.shape[1] == 3
            and theirs.shape[0] == mine.shape[0] and theirs.shape[2:] == mine.shape[2:]):
        return theirs.repeat(1, 3, 1, 1) / 3
    return None


def fit_state(model: nn.Module, state: StateDict, head: str) -> tuple[StateDict, list[str]]:
    """The file's tensors mapped onto ``model`` (rules 2-5) and the problems found.

    Args:
        model: The built model (any device, ``meta`` included: only shapes are read).
        state: The file's state dict.
        head: Dotted path of the classifier head, whose keys are ignored on both sides.

    Returns:
        ``(state to load, problems)``: an empty list of problems when the file fits.
    """
    skip = tuple(p for p in (head + ".",) + _AUX_HEADS if p != ".")
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    theirs = {k: v for k, v in strip_prefixes(state).items() if not k.startswith(skip)}
    missing = [k for k in own if k not in theirs and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in theirs if k not in own]
    out: StateDict = {}
    wrong: list[str] = []
    for key in own.keys() & theirs.keys():
        value = theirs[key]
        if value.shape != own[key].shape:
            value = _stem_fit(own[key], value)  # type: ignore[assignment]  # None: no fit
            if value is None:
                wrong.append(f"{key} {tuple(theirs[key].shape)} vs {tuple(own[key].shape)}")
                continue
        out[key] = value
    kinds = (("missing", missing), ("unexpected", unexpected), ("of another shape", sorted(wrong)))
    return out, [_listed(kind, keys) for kind, keys in kinds if keys]


def _listed(kind: str, keys: list[str]) -> str:
    first = ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")
    return f"{len(keys)} {kind} keys ({first})"


def head_path(model: nn.Module, spec_head: str) -> str:
    """The classifier head's path: the spec's (torchvision), else timm's ``pretrained_cfg``."""
    if spec_head:
        return spec_head
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier", "")
    return classifier[0] if isinstance(classifier, (tuple, list)) else str(classifier)


def load_weights_file(model: nn.Module, name: str, spec_head: str, uri: str) -> str:
    """Loads the backbone of ``model`` from the file at ``uri``; returns the file's SHA-256.

    Raises:
        ConfigError: The file cannot be read, is not a state dict, or does not fit (one line).
    """
    read = read_weights(uri)
    state, problems = fit_state(model, read.state, head_path(model, spec_head))
    if problems:
        raise ConfigError(f"model.weights {uri} does not fit {name}: {'; '.join(problems)}")
    if any(p.is_meta for p in model.parameters()):
        return read.sha256  # a shape check only (spec validation)
    model.load_state_dict(state, strict=False)
    return read.sha256
