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


# --- model.weights: a backbone from a file ------------------------------------------------
FILE_MODEL = "timm.test_resnet"  # a library model: the path every backbone takes


def _backbone_state(name: str = FILE_MODEL, seed: int = 7) -> dict[str, torch.Tensor]:
    """The weights of ``name`` with a 14-class head (like an X-ray model's)."""
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_model(name, 14).state_dict().items()}


def _loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    trunk = [k for k in own if not k.startswith("fc.")]
    assert len(trunk) > 10
    return all(torch.equal(own[k], state[k]) for k in trunk)


def test_weights_file_initialises_the_backbone_and_a_new_head(tmp_path: Path) -> None:
    state = _backbone_state()
    torch.save(state, tmp_path / "xray.pt")
    torch.manual_seed(0)
    model = build_model(FILE_MODEL, 3, weights=str(tmp_path / "xray.pt"))
    assert _loaded(model, state)
    assert model.get_classifier().out_features == 3
    torch.manual_seed(0)
    fresh = build_model(FILE_MODEL, 3)  # the head is the one a plain build makes
    assert torch.equal(model.get_classifier().weight, fresh.get_classifier().weight)


@pytest.mark.parametrize("wrap", ["module.", "model.module.", "state_dict", "safetensors"])
def test_weights_file_prefixes_and_wrappers_are_mapped(tmp_path: Path, wrap: str) -> None:
    state = _backbone_state()
    if wrap == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({f"model.{k}": v for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "w.pth"
        keyed = {f"{wrap}{k}": v for k, v in state.items()} if wrap.endswith(".") else state
        torch.save({"state_dict": keyed, "epoch": 3} if wrap == "state_dict" else keyed, path)
    assert _loaded(build_model(FILE_MODEL, 3, weights=str(path)), state)


def test_one_channel_stem_is_repeated_over_rgb_divided_by_three(tmp_path: Path) -> None:
    state = _backbone_state()
    stem = next(k for k, v in state.items() if v.dim() == 4)  # the first convolution
    grey = torch.randn(state[stem].shape[0], 1, *state[stem].shape[2:])
    torch.save({**state, stem: grey}, tmp_path / "grey.pt")
    model = build_model(FILE_MODEL, 3, weights=str(tmp_path / "grey.pt"))
    conv = model.get_submodule(stem.rsplit(".", 1)[0])
    image = torch.randn(1, 1, 32, 32)
    one_channel = torch.nn.functional.conv2d(image, grey, stride=conv.stride, padding=conv.padding)
    torch.testing.assert_close(conv(image.expand(1, 3, 32, 32)), one_channel, rtol=1e-5,
                               atol=1e-5)


def test_a_file_that_does_not_fit_is_one_line_naming_the_keys(tmp_path: Path) -> None:
    torch.save(_backbone_state("resnet18"), tmp_path / "other.pt")
    with pytest.raises(ConfigError) as err:
        build_model(FILE_MODEL, 3, weights=str(tmp_path / "other.pt"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"model.weights {tmp_path / 'other.pt'} does not "
                                              f"fit {FILE_MODEL}: ")
    assert "missing keys (" in msg and "unexpected keys (" in msg and ", ...)" in msg
    assert "of another shape" in msg  # same key, other shape: resnet18's wider layers


def test_a_file_that_does_not_fit_exits_2_before_training(tmp_path: Path, run_cli) -> None:
    torch.save(_backbone_state("resnet18"), tmp_path / "other.pt")
    code, _, err = run_cli("train", "--set", f"model.name={FILE_MODEL}", "--set",
                           f"model.weights={tmp_path / 'other.pt'}", "--set",
                           f"results={tmp_path / 'runs'}", "--set", "model.image_size=32")
    assert code == 2 and err.count("\n") == 1 and "does not fit timm.test_resnet" in err
    assert not (tmp_path / "runs").exists()  # nothing written: no trial started


@pytest.mark.parametrize("content,expected", [
    ([torch.zeros(2)], "expected a state dict (name -> tensor), got list"),
    ({"conv1.weight": torch.zeros(2), "lr": 0.1}, "1 of its entries are not tensors (first: 'lr')"),
    ({"conv1.weight": torch.zeros(2), "path": Path("/etc/passwd")}, "torch.load(weights_only=True)"),
])
def test_a_non_state_dict_file_is_refused(tmp_path: Path, content: object, expected: str) -> None:
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(ConfigError) as err:
        build_model(FILE_MODEL, 3, weights=str(tmp_path / "x.pt"))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_weights_and_pretrained_together_are_refused(tmp_path: Path) -> None:
    from raybench.config import load_spec

    with pytest.raises(ConfigError, match="model.pretrained=true and model.weights both"):
        load_spec(None, ["model.pretrained=true", f"model.weights={tmp_path / 'w.pt'}"])


def test_weights_file_from_s3_and_its_sha256_in_the_runs_table(tmp_path: Path, s3_bucket: str,
                                                                synth_manifest: Path) -> None:
    import hashlib

    import boto3

    from raybench.config import load_spec
    from raybench.engine.run import run_training
    from raybench.store import ResultStore

    torch.save(_backbone_state(), tmp_path / "xray.pt")
    data = (tmp_path / "xray.pt").read_bytes()
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="w/xray.pt", Body=data)
    spec = load_spec(None, [
        f"model.name={FILE_MODEL}", f"model.weights=s3://{s3_bucket}/w/xray.pt",
        f"data.manifest={synth_manifest}", f"data.cache_dir={tmp_path / 'c'}",
        f"results={tmp_path / 'r'}", "model.image_size=32", "train.epochs=1",
        "train.batch_size=16", "train.num_threads=1", "train.device=cpu", "cam.enabled=false"])
    run_training(spec)
    row = ResultStore(spec.results).read_table(spec.name, "runs").iloc[0]
    assert row["weights_sha256"] == hashlib.sha256(data).hexdigest()
    assert row["model"] == FILE_MODEL and row["model_resolved"].startswith("timm.test_resnet.")
    import timm

    assert row["model_library"] == f"timm {timm.__version__}"


def test_a_sweep_refuses_a_file_that_does_not_fit_before_ray_starts(tmp_path: Path,
                                                                      run_cli) -> None:
    torch.save(_backbone_state("resnet18"), tmp_path / "other.pt")
    (tmp_path / "spec.yaml").write_text(f"sweep: {{mode: paper, models: [{FILE_MODEL}]}}\n")
    code, _, err = run_cli("sweep", "--config", str(tmp_path / "spec.yaml"), "--set",
                           f"model.weights={tmp_path / 'other.pt'}", "--results",
                           str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "does not fit timm.test_resnet" in err
    assert not (tmp_path / "r" / "train").exists()  # the sweep was never claimed
