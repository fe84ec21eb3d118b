"""The model zoo: registry contents, every model's forward + backward, heads, errors."""
from __future__ import annotations

import json

import pytest
import torch

from raybench.errors import ConfigError
from raybench.models import MODELS, build_model, count_parameters, get_model_spec, unwrap_model
from raybench.models.zoo import meta_parameter_count

PAPER_MODELS = ["alexnet", "vgg16", "vgg19", "resnet18", "resnet50", "resnet101", "googlenet",
                "inception_v3", "squeezenet", "inception_resnet_v2", "xception", "densenet201",
                "cnnx"]
# Parameter counts with a 4-class head, measured once (DESIGN.md section 7).
EXPECTED_PARAMS_M = {"alexnet": 57.0, "vgg16": 134.3, "vgg19": 139.6, "resnet18": 11.2,
                     "resnet50": 23.5, "resnet101": 42.5, "googlenet": 5.6, "inception_v3": 21.8,
                     "squeezenet": 0.72, "inception_resnet_v2": 54.3, "xception": 20.8,
                     "densenet201": 18.1, "cnnx": 1.45}


def test_registry_holds_exactly_the_paper_models() -> None:
    assert sorted(MODELS.keys()) == sorted(PAPER_MODELS)


@pytest.mark.parametrize("name", MODELS.keys())
def test_parameter_count_matches_reference(name: str) -> None:
    assert meta_parameter_count(name) / 1e6 == pytest.approx(EXPECTED_PARAMS_M[name], rel=0.01)


@pytest.mark.parametrize("name", MODELS.keys())
def test_spec_fields(name: str) -> None:
    spec = get_model_spec(name)
    big = {"inception_v3", "inception_resnet_v2", "xception"}
    assert spec.input_size == (299 if name in big else 224)
    assert spec.source == ("timm" if name in {"inception_resnet_v2", "xception"}
                           else "raybench" if name == "cnnx" else "torchvision")
    assert len(spec.mean) == len(spec.std) == 3
    assert spec.cam_method in {"cam", "gradcam", "cnnx"}


@pytest.mark.parametrize("name", MODELS.keys())
def test_forward_backward_every_model(name: str) -> None:
    """Every registered model trains one step at the smallest input it accepts."""
    spec = get_model_spec(name)
    size = max(spec.min_input_size, 32)
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, image_size=size)
    model.train()
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every layer is trained"
    assert all(p.requires_grad for p in model.parameters())
    # CAM target layer exists in the built model
    assert unwrap_model(model).get_submodule(spec.cam_layer) is not None


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        build_model("resnet19", 4)
    msg = str(err.value)
    assert "resnet19" in msg and "did you mean 'resnet18'" in msg
    for name in PAPER_MODELS:
        assert name in msg


def test_too_small_input_is_rejected() -> None:
    with pytest.raises(ConfigError, match="inception_v3: image_size 64 is too small; .*>= 75"):
        build_model("inception_v3", 4, image_size=64)


def test_unwrap_model_sees_through_ddp_like_wrappers() -> None:
    inner = build_model("cnnx", 2, image_size=32)
    wrapper = torch.nn.Module()
    wrapper.module = inner
    assert unwrap_model(wrapper) is inner


def test_models_cli_json(run_cli) -> None:
    code, out, _ = run_cli("models", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list(MODELS.keys())
    by_name = {r["name"]: r for r in rows}
    assert by_name["cnnx"]["params"] == pytest.approx(1.45e6, abs=0.15e6)  # 1.3 to 1.6 M
    assert by_name["xception"]["input_size"] == 299
    assert all({"name", "params", "input_size", "cam_layer", "paper_name"} <= set(r) for r in rows)


def test_models_cli_table(run_cli) -> None:
    code, out, _ = run_cli("models")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1 + len(PAPER_MODELS)
    assert any(line.startswith("cnnx") and "1,446,148" in line for line in lines)


def test_count_parameters_counts_trainable_only() -> None:
    model = torch.nn.Linear(3, 2)
    assert count_parameters(model) == 8
    model.bias.requires_grad_(False)
    assert count_parameters(model) == 6


def test_model_table_and_cam_catalog_are_torch_free() -> None:
    import subprocess
    import sys

    code = ("import sys; import raybench.config, raybench.models.names, raybench.catalog.cam_methods; "
            "from raybench.models.table import MODELS; "
            "print(len(MODELS), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["13", "False"]


@pytest.mark.parametrize("name", MODELS.keys())
def test_table_entry_resolves_its_builder_cam_method_and_activation(name: str) -> None:
    from raybench.catalog.cam_methods import METHODS

    spec = get_model_spec(name)
    assert callable(spec.load_builder())
    assert METHODS.get(spec.cam_method).name == spec.cam_method
    assert bool(spec.head) == (spec.source != "timm")  # timm models name their head themselves
    if spec.cam_activation:
        assert callable(getattr(torch.nn.functional, spec.cam_activation))
