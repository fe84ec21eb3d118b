"""CAM methods, hooks, ROI focus and overlays; driven by the model registry."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from raybench.cam import (
    METHODS,
    capture_layer,
    classifier_head,
    compute_cams,
    eval_mode,
    lung_field_template,
    pointing_game,
    roi_focus,
    target_layer,
)
from raybench.camset import CamSet
from raybench.cam.export import roi_rows, select_images, stored_maps
from raybench.cam.roi import load_masks
from raybench.config import CamConfig, load_spec
from raybench.errors import ConfigError
from raybench.models import MODELS, build_model, get_model_spec
from raybench.store import ResultStore

NUM_CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread: None) -> None:
    """Every test of this module runs torch on one thread (see conftest)."""




def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size), generator=gen, dtype=torch.uint8)


def _logit(out) -> torch.Tensor:
    return out.logits.gather(1, out.classes[:, None])[:, 0]


def test_config_method_choices_are_the_registry() -> None:
    with pytest.raises(ConfigError) as err:
        load_spec(None, ["cam.method=nope"])
    assert str(err.value) == f"--set: cam.method='nope'; allowed: auto, {', '.join(METHODS)}"
    assert load_spec(None, ["cam.method=gradcam"]).cam.method == "gradcam"
    assert {get_model_spec(n).cam_method for n in MODELS} <= set(METHODS.keys())


@pytest.mark.parametrize("name", MODELS.keys())
def test_every_model_shapes_and_sum_identity(name: str) -> None:
    """Registry method and Grad-CAM give (N, h, w) maps of the target layer; exact methods
    satisfy logit = sum(M) * scale + offset (the paper's equation 6, up to the pooling scale)."""
    torch.manual_seed(0)
    spec = get_model_spec(name)
    size = spec.min_input_size  # keeps the 13 models well inside a minute on 2 CPU cores
    model = build_model(name, NUM_CLASSES, image_size=size)
    # A non-zero head bias makes the offset part of the identity count (heads start at 0) and
    # keeps SqueezeNet's ReLU'd class planes from being all zero at initialisation.
    torch.nn.init.constant_(classifier_head(model).bias, 0.5)
    images = _images(2, size)
    with capture_layer(target_layer(model, spec)) as cap, torch.no_grad(), eval_mode(model):
        logits = model(torch.randn(1, 3, size, size))
    h, w = cap.activation.shape[-2:]
    assert logits.shape == (1, NUM_CLASSES)

    out = compute_cams(model, name, images, batch_size=1)  # two batches: concatenation too
    assert out.maps.shape == (2, h, w) and out.logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out.maps).all() and out.maps.abs().sum() > 0
    assert out.classes.tolist() == out.logits.argmax(1).tolist()  # default: the predicted class
    assert model.training, "compute_cams must restore the model's train mode"
    if METHODS.get(spec.cam_method).exact:
        total = out.maps.sum(dim=(1, 2)) * out.scale + out.offset
        torch.testing.assert_close(total, _logit(out), rtol=1e-4, atol=1e-5)
    else:
        assert out.scale is None and out.offset is None
    grad = compute_cams(model, name, images, method="gradcam", classes=out.classes)
    assert grad.maps.shape == (2, h, w) and torch.isfinite(grad.maps).all()
    torch.testing.assert_close(grad.logits, out.logits, rtol=1e-4, atol=1e-4)
    assert all(p.grad is None for p in model.parameters()), "Grad-CAM must not touch .grad"


def test_gradcam_of_a_gap_model_is_cam_over_area() -> None:
    torch.manual_seed(1)
    model = build_model("resnet18", 4, image_size=96)
    images = _images(3, 96)
    cam = compute_cams(model, "resnet18", images, method="cam")
    grad = compute_cams(model, "resnet18", images, method="gradcam")
    h, w = cam.maps.shape[-2:]
    assert (h, w) == (3, 3)
    torch.testing.assert_close(grad.maps, cam.maps / (h * w), rtol=1e-4, atol=1e-6)


def test_cnnx_contribution_map_sums_to_logit_minus_bias_for_every_class() -> None:
    torch.manual_seed(2)
    model = build_model("cnnx", 4, image_size=64, stride=2)
    images = _images(2, 64)
    with torch.no_grad():
        from raybench.data.transforms import to_model_input

        spec = get_model_spec("cnnx")
        logits = model.eval()(to_model_input(images, spec.mean, spec.std))
    for k in range(4):
        out = compute_cams(model, "cnnx", images, classes=torch.full((2,), k))
        assert out.maps.shape == (2, 32, 32) and out.scale == 1.0
        torch.testing.assert_close(out.maps.sum(dim=(1, 2)),
                                   logits[:, k] - model.fc.bias[k].detach(),
                                   rtol=1e-4, atol=1e-5)


def test_unsuitable_methods_fail_with_a_useful_message() -> None:
    model = build_model("alexnet", 2, image_size=63)
    with pytest.raises(ConfigError, match="gradcam"):
        compute_cams(model, "alexnet", _images(1, 63), method="cam")
    with pytest.raises(ConfigError, match="CNN-X"):
        compute_cams(build_model("squeezenet", 2, image_size=32), "squeezenet", _images(1, 32),
                     method="cnnx")
    with pytest.raises(ConfigError, match="valid: cam, cnnx, gradcam"):
        compute_cams(model, "alexnet", _images(1, 63), method="scorecam")


@pytest.mark.parametrize("track_grad", [False, True])
def test_hooks_are_removed_and_the_record_survives_inplace_ops(track_grad: bool) -> None:
    """Like DenseNet's ``F.relu(features, inplace=True)`` after its target layer."""
    conv = torch.nn.Conv2d(3, 4, 3)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(inplace=True))
    with capture_layer(conv, track_grad=track_grad) as cap:
        out = model(torch.randn(2, 3, 8, 8))
    assert not conv._forward_hooks
    assert (cap.activation < 0).any(), "the record was modified by the in-place ReLU"
    assert (out >= 0).all() and cap.activation.requires_grad == track_grad
    if track_grad:
        (grad,) = torch.autograd.grad(out.sum(), cap.activation)
        assert torch.equal(grad, (cap.activation > 0).float())
    with eval_mode(model):
        assert not model.training
    assert model.training


def test_roi_focus_and_pointing_game_values() -> None:
    masks = torch.zeros(4, 4, 4, dtype=torch.bool)  # same size as the maps: no interpolation
    masks[:, :, :2] = True  # left half is "lung"
    maps = torch.zeros(4, 4, 4)
    maps[0, :, :2] = 1.0  # all energy inside
    maps[1, :, 2:] = 1.0  # all energy outside
    maps[2] = 1.0  # uniform: the mask's area share
    maps[3] = -1.0  # no positive energy
    maps[2, 0, 0] = 2.0  # its maximum is inside
    focus = roi_focus(maps, masks)
    assert focus[0] == pytest.approx(1.0) and focus[1] == pytest.approx(0.0, abs=1e-6)
    assert focus[2] == pytest.approx(9 / 17) and math.isnan(focus[3])
    assert pointing_game(maps, masks)[:3].tolist() == [1.0, 0.0, 1.0]


def test_lung_template_matches_synthetic_masks(synth_manifest) -> None:
    import pandas as pd

    df = pd.read_parquet(synth_manifest)
    ids = df["image_id"].tolist()[::20]
    masks, from_file = load_masks(df, ids, [synth_manifest.parent], 64)
    assert from_file.all() and masks.shape == (len(ids), 64, 64)
    template = lung_field_template(64)
    iou = (masks & template).sum((1, 2)) / (masks | template).sum((1, 2))
    assert iou.min() > 0.6, iou
    # Without a mask_path (or a missing file) the template is used and reported as such.
    approx, from_file = load_masks(df.drop(columns="mask_path"), ids[:2], [synth_manifest.parent], 64)
    assert not from_file.any() and (approx == template).all()


def test_select_images_and_roi_rows() -> None:
    targets = np.array([0, 1, 1, 0, 1, 0, 2])
    predicted = np.array([0, 1, 0, 0, 1, 2, 2])
    assert select_images(CamConfig(select="per_class", per_class=2), targets, predicted).tolist() \
        == [0, 1, 2, 3, 6]
    assert select_images(CamConfig(select="misclassified"), targets, predicted).tolist() == [2, 5]
    assert len(select_images(CamConfig(select="all"), targets, predicted)) == 7
    focus = np.array([1.0, 0.5, np.nan, 0.0])
    hits = np.array([1.0, 1.0, 0.0, 0.0])
    rows = roi_rows(("normal", "covid19"), np.array([0, 0, 1, 1]), focus, hits, approx=True)
    by = {(r["class"], r["metric"]): r for r in rows}
    assert by[("normal", "roi_focus_approx")]["value"] == pytest.approx(0.75)
    assert by[("all", "roi_focus_approx")]["value"] == pytest.approx(0.5)  # NaN left out
    assert by[("covid19", "pointing_game_approx")]["value"] == 0.0
    assert by[("all", "roi_n_approx")]["value"] == 4.0
    assert 0.0 < by[("all", "pointing_game_approx")]["ci_low"] < 0.5
    assert ("all", "roi_chance_approx") not in by  # no mask shares given: no chance row
    shares = roi_rows(("normal", "covid19"), np.array([0, 0, 1, 1]), focus, hits,
                      share=np.array([0.2, 0.4, 0.6, 0.8]))
    chance = {r["class"]: r["value"] for r in shares if r["metric"] == "roi_chance"}
    assert chance == pytest.approx({"normal": 0.3, "covid19": 0.7, "all": 0.5})


def test_stored_maps_are_float16_in_unit_range() -> None:
    maps = torch.tensor([[[-1.0, 2.0], [4.0, 0.0]], [[-1.0, -2.0], [-3.0, -4.0]]])
    out = stored_maps(maps)
    assert out.dtype == np.float16 and out.shape == (2, 2, 2)
    assert out[0].tolist() == [[0.0, 0.5], [1.0, 0.0]] and not out[1].any()


def _camset(n: int = 3, size: int = 32) -> CamSet:
    rng = np.random.default_rng(0)
    return CamSet(image_ids=np.array([f"synthetic:img{i}" for i in range(n)]),
                  labels=np.array(["normal"] * n), predicted=np.array(["viral"] * n),
                  cams=rng.random((n, 4, 4)), method="cnnx", target_layer="pooled",
                  input_size=(size, size), images=rng.integers(0, 255, (n, size, size), np.uint8))


def test_cli_cam_renders_overlays(tmp_path, run_cli) -> None:
    store = ResultStore(str(tmp_path / "runs"))
    store.write_cams("s1", "t1", _camset())
    code, out, err = run_cli("cam", str(tmp_path / "runs"), "--sweep", "s1", "--trial", "t1",
                             "--images", "synthetic:img2", "--out", str(tmp_path / "png"))
    assert code == 0, err
    files = list((tmp_path / "png").glob("*.png"))
    assert [f.name for f in files] == ["synthetic_img2.png"] and "pred viral" in out
    with Image.open(files[0]) as img:
        assert img.size == (64, 32) and img.mode == "RGB"  # original | overlay
    code, _, err = run_cli("cam", str(tmp_path / "runs"), "--sweep", "s1", "--trial", "t1",
                           "--images", "nope", "--out", str(tmp_path / "png"))
    assert code == 2 and "no CAM for image(s) nope" in err
    code, _, err = run_cli("cam", str(tmp_path / "runs"), "--sweep", "s1", "--trial", "t9",
                           "--out", str(tmp_path / "png"))
    assert code == 2 and "no CAMs for trial 't9'" in err


def test_package_names_load_lazily_and_unknown_names_fail() -> None:
    import raybench.cam as cam

    assert cam.compute_cams is compute_cams and "roi_focus" in dir(cam)
    assert set(cam.__all__) <= set(dir(cam)) and dir(cam) == sorted(dir(cam))
    with pytest.raises(AttributeError, match="^module 'raybench.cam' has no attribute 'nope'$"):
        cam.nope  # noqa: B018  # the attribute access is what is tested
