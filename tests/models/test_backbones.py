"""Any timm / torchvision backbone by name: specs from the libraries' configs, CAM layers found
from structure (checked against pytorch-grad-cam and torchcam), one training step per family."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raybench.cam import compute_cams
from raybench.config import load_spec
from raybench.data.transforms import to_model_input
from raybench.errors import ConfigError
from raybench.models import MODELS, build_model, get_model_spec
from raybench.models.camlayer import find_cam_target
from raybench.models.names import model_problem

#: One small model per family (the first test at each size keeps 2 cores busy for seconds).
FAMILIES = {
    "resnet": "torchvision.resnet18",
    "densenet": "torchvision.densenet121",
    "efficientnet": "timm.test_efficientnet",
    "convnext": "timm.test_convnext",
    "regnet": "timm.regnetx_002",
    "mobilenet": "torchvision.mobilenet_v3_small",
    "vit": "timm.test_vit",
}
SIZE = 128
JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread: None) -> None:
    """Every test of this module runs torch on one thread (see conftest)."""


def _images(n: int = 2, size: int = SIZE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, size, size), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("name", MODELS.keys())
def test_found_cam_layer_is_the_table_entry_for_every_paper_model(name: str) -> None:
    spec = get_model_spec(name)
    with torch.device("meta"):
        model = build_model(name, 4)
    assert find_cam_target(model, spec.input_size).layer == spec.cam_layer


def test_library_specs_come_from_the_libraries_configs() -> None:
    tv = get_model_spec("torchvision.efficientnet_b3")  # its weights' crop is 300 px
    assert (tv.source, tv.arch, tv.input_size, tv.head) == ("torchvision", "efficientnet_b3",
                                                            300, "classifier.1")
    assert (tv.cam_layer, tv.cam_method) == ("features", "cam")
    vit = get_model_spec("timm.test_vit")
    assert (vit.input_size, vit.mean, vit.cam_layer, vit.cam_tokens) == (
        160, (0.5, 0.5, 0.5), "blocks.5.norm1", 1)
    conv = get_model_spec("timm.convnext_tiny")
    assert conv.resolved == "timm.convnext_tiny.in12k_ft_in1k"  # timm's default tag
    assert (conv.cam_layer, conv.cam_method) == ("norm_pre", "gradcam")  # LayerNorm in the head
    dense = get_model_spec("torchvision.densenet121")
    assert (dense.cam_method, dense.cam_activation) == ("cam", "relu")  # F.relu before pooling
    swin = get_model_spec("timm.swin_tiny_patch4_window7_224")
    assert swin.cam_layer == "" and "channels-last" in swin.cam_note
    with pytest.raises(ConfigError, match="cannot have CAMs: its features are channels-last"):
        compute_cams(build_model(swin.name, 2), swin.name, _images(1, 224))


@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds_and_trains_one_step(family: str) -> None:
    name = FAMILIES[family]
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, image_size=64)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)),
                                             torch.tensor([0, 2]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(p.requires_grad and p.grad is not None for p in model.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert any(changed)  # zero-initialised residual branches may see zero gradients at first


def _vit_grid(tokens: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ViT reshape, written out here: 1 class token, square grid."""
    patches = tokens[:, 1:, :]
    side = int(patches.shape[1] ** 0.5)
    return patches.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_cam_matches_pytorch_grad_cam(family: str) -> None:
    """Our Grad-CAM at the found layer equals pytorch-grad-cam's (its hooks, gradients and
    channel weights) on the same input; an exact CAM sums to the logit and equals Grad-CAM
    times h * w where the head is GAP + linear."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    name = FAMILIES[family]
    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, image_size=SIZE).eval()
    images = _images()
    ours = compute_cams(model, name, images, method="gradcam")
    x = to_model_input(images, spec.mean, spec.std)
    layer = model.get_submodule(spec.cam_layer)
    targets = [ClassifierOutputTarget(int(c)) for c in ours.classes]
    with GradCAM(model=model, target_layers=[layer],
                 reshape_transform=_vit_grid if spec.cam_tokens else None) as cam:
        outputs = cam.activations_and_grads(x)
        sum(t(o) for t, o in zip(targets, outputs)).backward()
        (acts,), (grads,) = cam.activations_and_grads.activations, cam.activations_and_grads.gradients
        theirs = cam.get_cam_image(x, layer, targets, acts.numpy(), grads.numpy(), False)
    peak = float(ours.maps.abs().max())
    assert peak > 0 and theirs.shape == tuple(ours.maps.shape)
    np.testing.assert_allclose(ours.maps.numpy(), theirs, rtol=1e-4, atol=peak * 1e-4)
    if spec.cam_method == "cam":
        exact = compute_cams(model, name, images, classes=ours.classes)
        logit = exact.logits.gather(1, exact.classes[:, None])[:, 0]
        torch.testing.assert_close(exact.maps.sum((1, 2)) * exact.scale + exact.offset, logit,
                                   rtol=1e-4, atol=1e-5)
        if spec.cam_activation is None:  # GAP + linear: CAM = Grad-CAM * h * w
            torch.testing.assert_close(exact.maps * exact.scale, ours.maps, rtol=1e-3,
                                       atol=peak * 1e-4)


@pytest.mark.parametrize("family", ["resnet", "efficientnet", "regnet"])
def test_exact_cam_matches_torchcam(family: str) -> None:
    """The exact CAM (Zhou et al.) against torchcam's CAM on the same layer and input."""
    from torchcam.methods import CAM

    name = FAMILIES[family]
    spec = get_model_spec(name)
    assert spec.cam_method == "cam" and spec.cam_activation is None
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, image_size=SIZE).eval()
    images = _images()
    ours = compute_cams(model, name, images)
    x = to_model_input(images, spec.mean, spec.std)
    head = spec.head or model.pretrained_cfg["classifier"]
    with CAM(model, target_layer=spec.cam_layer, fc_layer=head) as extractor:
        for i in range(len(images)):
            scores = model(x[i:i + 1])
            (theirs,) = extractor(int(ours.classes[i]), scores, normalized=False)
            torch.testing.assert_close(ours.maps[i], theirs[0], rtol=1e-4, atol=1e-5)


def test_spec_accepts_library_names_and_suggests_on_a_typo() -> None:
    spec = load_spec(None, ["model.name=timm.convnext_tiny",
                            "sweep.models=[resnet50, torchvision.efficientnet_b0, cnnx]"])
    assert spec.model.name == "timm.convnext_tiny"
    assert model_problem("timm.convnext_tiny.fb_in22k") is None  # a pretrained tag
    with pytest.raises(ConfigError, match=r"unknown timm model 'convnxt_tiny' \(did you mean "
                                          r"'timm.convnext_tiny'\?\)"):
        load_spec(None, ["model.name=timm.convnxt_tiny"])
    with pytest.raises(ConfigError, match=r"sweep.models.*unknown torchvision model "
                                          r"'efficientnet_b9' \(did you mean"):
        load_spec(None, ["sweep.models=[resnet50, torchvision.efficientnet_b9]"])
    assert "did you mean 'timm.convnext_tiny'?" in model_problem("timm/convnext_tiny")
    assert "timm.<name> or torchvision.<name>" in model_problem("convnext_tiny")


def test_models_search_lists_without_weights(run_cli) -> None:
    code, out, _ = run_cli("models", "--search", "timm.test_conv*", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"timm.test_convnext", "timm.test_convnext2", "timm.test_convnext3"}
    one = rows["timm.test_convnext"]
    model = build_model("timm.test_convnext", 4)
    assert one["params"] == sum(p.numel() for p in model.parameters())
    assert (one["input_size"], one["cam_layer"], one["source"]) == (160, "norm_pre", "timm")
    code, _, err = run_cli("models", "--search", "no_such_model*")
    assert code == 2 and err.count("\n") == 1 and "no timm or torchvision model" in err


def test_modern_backbones_job_validates() -> None:
    from raybench.trial import cells

    spec = load_spec(JOBS / "modern-backbones.yaml")
    assert spec.sweep.models == ("timm.convnext_tiny", "timm.efficientnet_b0", "timm.regnety_080",
                                 "torchvision.densenet121", "resnet50")
    assert (spec.train.lr, spec.train.batch_size, spec.train.epochs) == (3e-4, 15, 20)
    assert spec.data.scenario == "paper-3" and len(cells(spec)) == 15
    assert all(get_model_spec(m).cam_layer for m in spec.sweep.models)


def test_a_vision_transformer_trains_at_another_size_but_not_its_imagenet_weights() -> None:
    model = build_model("timm.vit_tiny_patch16_224", 3, image_size=64)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ConfigError, match=r"ImageNet weights are for 224 px inputs, not 64"):
        build_model("timm.vit_tiny_patch16_224", 3, image_size=64, pretrained=True)
