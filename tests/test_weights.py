"""Pretrained weights: explicit folder, torchvision cache, timm, clear errors; nothing downloaded."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from raybench.errors import ConfigError, RaybenchError
from raybench.models import build_model, get_model_spec
from raybench.models.weights import candidate_names


@pytest.fixture(autouse=True)
def _offline_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty caches and offline mode: any attempt to download would fail the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _imagenet_state(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict shaped like the ImageNet checkpoint (1000-class head), random values."""
    spec = get_model_spec(name)
    torch.manual_seed(seed)
    model = spec.load_builder()(spec, 1000, pretrained=False, image_size=spec.input_size)
    if name in ("googlenet", "inception_v3"):
        import torchvision

        model = torchvision.models.get_model(spec.arch, weights=None, aux_logits=True,
                                             init_weights=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _trunk_equal(model: torch.nn.Module, state: dict[str, torch.Tensor], skip: str) -> bool:
    own = model.state_dict()
    keys = [k for k in own if not k.startswith(skip) and k in state]
    assert len(keys) > 10
    return all(torch.equal(own[k], state[k]) for k in keys)


def test_weights_dir_pth(tmp_path: Path) -> None:
    state = _imagenet_state("resnet18")
    torch.save(state, tmp_path / "resnet18.pth")
    model = build_model("resnet18", 4, pretrained=True, weights_dir=str(tmp_path))
    assert model.fc.out_features == 4
    assert _trunk_equal(model, state, "fc.")


def test_weights_dir_safetensors_for_timm_model(tmp_path: Path) -> None:
    state = _imagenet_state("xception")
    save_file(state, str(tmp_path / "xception.safetensors"))
    model = build_model("xception", 3, pretrained=True, weights_dir=str(tmp_path))
    assert model.get_classifier().out_features == 3
    assert _trunk_equal(model, state, "fc.")


def test_torchvision_cache_in_torch_home(_offline_caches: Path) -> None:
    state = _imagenet_state("googlenet")
    official = candidate_names(get_model_spec("googlenet"))[-1]
    cache = _offline_caches / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / official)
    model = build_model("googlenet", 2, pretrained=True)
    assert model.fc.out_features == 2
    assert model.aux1 is None and model.aux2 is None and model.transform_input
    assert _trunk_equal(model, state, "fc.")


def test_missing_weights_name_every_place_looked(tmp_path: Path) -> None:
    with pytest.raises(RaybenchError) as err:
        build_model("resnet50", 4, pretrained=True, weights_dir=str(tmp_path / "w"))
    msg = str(err.value)
    assert msg.startswith("no ImageNet weights for resnet50")
    assert str(tmp_path / "w" / "resnet50.pth") in msg
    assert "hub/checkpoints/resnet50-" in msg


def test_missing_timm_weights_offline() -> None:
    with pytest.raises(RaybenchError, match="no ImageNet weights for inception_resnet_v2.*offline"):
        build_model("inception_resnet_v2", 4, pretrained=True)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    """weights_only=True: a checkpoint holding arbitrary Python objects is not unpickled."""
    torch.save({"fc.weight": torch.zeros(2), "evil": Path("/etc/passwd")}, tmp_path / "resnet18.pth")
    with pytest.raises(Exception, match="(?i)weights only|weights_only|Unsupported"):
        build_model("resnet18", 4, pretrained=True, weights_dir=str(tmp_path))


def test_cnnx_has_no_pretrained_weights() -> None:
    with pytest.raises(ConfigError, match="cnnx has no ImageNet weights"):
        build_model("cnnx", 4, pretrained=True)
