"""Spec loading: YAML, --set overrides, unknown keys, types, ranges, round trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raybench.config import Spec, dump_yaml, from_dict, load_spec, to_dict
from raybench.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_paper_hyperparameters() -> None:
    spec = load_spec()
    assert (spec.train.lr, spec.train.batch_size, spec.train.epochs) == (3e-4, 15, 20)
    assert spec.model.options == {} and spec.model.pretrained is False
    assert spec.data.labels == ("normal", "bacteria", "viral", "covid19")


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nmodel: {name: resnet18}\ntrain: {lr: 1e-3, epochs: 2}\n")
    spec = load_spec(path, ["train.batch_size=8", "model.pretrained=true", "data.labels=[normal, covid19]"])
    assert spec.name == "x" and spec.model.name == "resnet18"
    assert spec.train.lr == 1e-3 and isinstance(spec.train.lr, float)  # YAML reads 1e-3 as a string
    assert spec.train.batch_size == 8 and spec.model.pretrained is True
    assert spec.data.labels == ("normal", "covid19")


def test_round_trip_through_dict_and_yaml() -> None:
    spec = load_spec(None, ["model.name=vgg16", "data.synthetic.marker_leak=0.5"])
    assert from_dict(Spec, to_dict(spec)) == spec
    assert from_dict(Spec, yaml.safe_load(dump_yaml(spec))) == spec


@pytest.mark.parametrize("text,match", [
    ("train: {lrr: 0.1}\n", r"unknown key 'train.lrr' \(did you mean 'train.lr'\?\); allowed: epochs"),
    ("modle: {name: cnnx}\n", r"unknown key 'modle' \(did you mean 'model'\?\)"),
    ("train: {epochs: three}\n", r"train.epochs must be int, got 'three'"),
    ("train: {batch_size: 1.5}\n", r"train.batch_size must be int"),
    ("model: {pretrained: 3}\n", r"model.pretrained must be bool"),
    ("train: {epochs: 0}\n", r"train.epochs must be > 0"),
    ("train: {precision: fp8}\n", r"train.precision='fp8'; allowed: auto, fp32, bf16"),
    ("data: {val_fraction: 1.5}\n", r"data.val_fraction must be in \[0, 1\)"),
    ("data: {labels: [normal, pneumonia]}\n", r"need >= 2 of normal, bacteria"),
    ("train: [1, 2]\n", r"train must be a mapping"),
    ("- a\n- b\n", r"a spec must be a mapping"),
    ("train:\n  lr: [1\n", r"line \d+: YAML syntax error"),
])
def test_bad_specs_name_file_key_and_allowed(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as err:
        load_spec(path)
    assert str(path) in str(err.value)


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        load_spec(None, ["train.lr"])
    with pytest.raises(ConfigError, match="unknown key 'train.lrate'"):
        load_spec(None, ["train.lrate=1"])


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_spec(path)


@pytest.mark.parametrize("path", sorted((REPO / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_job_spec_loads(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name


def test_fields_check_themselves_when_built_in_code() -> None:
    import dataclasses

    from raybench.config import DataConfig, TrainConfig

    with pytest.raises(ConfigError, match=r"^epochs must be > 0, got 0$"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match=r"^roi='lungs'; allowed: full, lungs_only, outside_lungs$"):
        dataclasses.replace(DataConfig(), roi="lungs")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^--set: sweep.space.lr_min must be < lr_max, got 0.1 and 0.01$"):
        load_spec(None, ["sweep.space.lr_min=0.1"])
    assert TrainConfig(epochs=3).epochs == 3


def test_model_choices_are_the_model_table() -> None:
    from raybench.models.names import unknown_model_message
    from raybench.models.table import MODELS

    with pytest.raises(ConfigError) as err:
        load_spec(None, ["sweep.models=[cnnx, resnet19]"])
    assert str(err.value) == f"--set: sweep.models: {unknown_model_message('resnet19')}"
    assert "valid: " + ", ".join(MODELS) in str(err.value)
