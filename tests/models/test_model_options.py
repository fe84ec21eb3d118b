"""Model options live in the registry: declared per model, validated torch-free, rejected when
unknown, recorded in the runs table only for the models that have them."""
from __future__ import annotations

import subprocess
import sys

import pytest

from raybench import schema as S
from raybench.config import load_spec
from raybench.errors import ConfigError
from raybench.models import names


def test_options_come_from_the_model_table() -> None:
    from raybench.models import MODELS

    for name in MODELS:
        spec = MODELS.get(name)
        assert spec.options == names.options_of(name)
    assert names.options_of("no_such_model") == ()
    cnnx = MODELS.get(names.DEFAULT_MODEL)
    assert cnnx.tunables == ("stride",) and cnnx.options[0].default == 3
    assert MODELS.get("resnet18").options == () and MODELS.get("resnet18").tunables == ()


def test_every_declared_option_has_a_runs_column() -> None:
    from raybench.models.table import MODELS

    declared = {opt.name for name in MODELS for opt in MODELS.get(name).options}
    assert declared == set(S.MODEL_OPTION_COLUMNS)
    for name in MODELS:
        for opt in MODELS.get(name).options:
            assert opt.name in S.RUNS_SCHEMA.names and opt.name in S.HYPERPARAMETERS


def test_option_columns_sit_after_epochs_and_never_shadow_a_runs_column() -> None:
    import raybench.models.table  # noqa: F401  registers the options

    names = S.RUNS_SCHEMA.names
    assert names[names.index(S.EPOCHS) + 1] == "stride" and names.count("stride") == 1
    assert S.RUNS_SCHEMA.field("stride").type == "int64"
    assert S.SEARCHED == (S.LR, S.BATCH_SIZE, "stride")
    S.add_model_option("stride")  # a second model declaring it adds no second column
    assert S.RUNS_SCHEMA.names == names
    with pytest.raises(ValueError, match="would shadow the runs column 'seed'"):
        S.add_model_option(S.SEED)


def test_builders_reject_options_the_model_does_not_declare() -> None:
    from raybench.models import build_model

    with pytest.raises(ConfigError, match="model 'resnet18' has no option 'stride'; its options: none"):
        build_model("resnet18", 4, image_size=32, stride=2)
    with pytest.raises(ConfigError, match="model 'cnnx' has no option 'filterz'; its options: stride"):
        build_model("cnnx", 4, image_size=32, filterz=8)
    model = build_model("cnnx", 4, image_size=64, stride=2)
    assert model.stride == 2


def test_spec_options_apply_to_the_models_that_declare_them() -> None:
    spec = load_spec(None, ["sweep.models=[cnnx, resnet18]", "model.options.stride=4"])
    assert spec.model.options == {"stride": 4}
    assert names.applicable("cnnx", spec.model.options) == {"stride": 4}
    assert names.applicable("resnet18", spec.model.options) == {}


@pytest.mark.parametrize("override,message", [
    ("model.options.depth=3", "model.options.depth: no model of this spec has an option 'depth'; "
                              "their options: stride"),
    ("model.cnnx_stride=3", "'model.cnnx_stride' is now 'model.options.stride'"),
    ("sweep.space.cnnx_strides=[2]", "'sweep.space.cnnx_strides' is now 'sweep.space.options.stride'"),
    ("model.options.stride=x", "model.options.stride must be int"),
])
def test_bad_model_options_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_spec(None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_option_declared_by_no_model_of_a_resnet_only_spec() -> None:
    with pytest.raises(ConfigError, match="no model of this spec has an option 'stride'; their options: none"):
        load_spec(None, ["model.name=resnet18", "sweep.models=[resnet18]", "model.options.stride=2"])


def test_searched_option_values_are_checked_at_the_image_size() -> None:
    with pytest.raises(ConfigError, match="CNN-X stride 15 on 16 px inputs leaves 1x1 feature maps"):
        load_spec(None, ["sweep.mode=optuna", "model.image_size=16", "sweep.space.options.stride=[2, 15]"])


def test_option_validation_does_not_import_torch() -> None:
    code = ("import sys; from raybench.config import load_spec; "
            "load_spec(None, ['model.options.stride=2']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
