"""Security: safe YAML and torch loading everywhere, and no planted secret in any output."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import boto3
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raybench"
REPO = PACKAGE.parent
SECRETS = {"AWS_SECRET_ACCESS_KEY": "rb-test-secret-0123456789",  # the s3_bucket fixture's value
           "HF_TOKEN": "hf_PLANTEDsecretTOKEN42", "RAY_AUTH_TOKEN": "planted-ray-token-0042",
           "AWS_SESSION_TOKEN": None}


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == name:
                found.append((path, node))
    return found


def test_yaml_is_only_loaded_safely() -> None:
    for unsafe in ("load", "load_all", "unsafe_load", "full_load"):
        hits = [(p.name, c.lineno) for p, c in _calls(unsafe)
                if isinstance(c.func.value, ast.Name) and c.func.value.id == "yaml"]
        assert not hits, f"yaml.{unsafe} used at {hits}"
    assert _calls("safe_load"), "specs are read with yaml.safe_load"


def test_torch_load_always_uses_weights_only() -> None:
    loads = [(p, c) for p, c in _calls("load")
             if isinstance(c.func.value, ast.Name) and c.func.value.id == "torch"]
    assert loads, "checkpoints and weights are loaded somewhere"
    for path, call in loads:
        flags = {k.arg: k.value for k in call.keywords}
        assert "weights_only" in flags and getattr(flags["weights_only"], "value", None) is True, \
            f"{path.name}:{call.lineno} torch.load without weights_only=True"
    for path, call in _calls("load_state_dict_from_url"):
        flags = {k.arg: getattr(k.value, "value", None) for k in call.keywords}
        assert flags.get("weights_only") is True, f"{path.name}:{call.lineno}"


@pytest.mark.s3
def test_planted_secrets_never_reach_outputs(tmp_path: Path, s3_endpoint: str, s3_bucket: str,
                                             monkeypatch: pytest.MonkeyPatch, run_cli,
                                             caplog: pytest.LogCaptureFixture) -> None:
    for key, value in SECRETS.items():
        if value:
            monkeypatch.setenv(key, value)
    caplog.set_level(logging.DEBUG)
    outputs = []
    for results in (f"s3://{s3_bucket}/res", str(tmp_path / "runs")):
        code, out, err = run_cli("-v", "train", "--config", str(REPO / "jobs" / "train-cnnx-synthetic.yaml"),
                                 "--set", "train.epochs=1", "--set", f"data.cache_dir={tmp_path / 'c'}",
                                 "--results", results)
        assert code == 0, err
        outputs += [out, err]
    code, out, err = run_cli("results", f"s3://{s3_bucket}/res", "--table", "runs", "--format", "json")
    assert code == 0, err
    outputs += [out, err, caplog.text]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert any(k.endswith("spec.yaml") for k in keys) and any("/runs/" in k for k in keys)
    blobs = [s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read() for k in keys]
    blobs += [p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    for value in filter(None, SECRETS.values()):
        assert all(value not in text for text in outputs), f"{value} printed or logged"
        assert all(value.encode() not in blob for blob in blobs), f"{value} stored in results"


def test_s3_filesystem_handed_to_ray_pickles_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray pickles RunConfig.storage_filesystem into its experiment state next to the results."""
    import pickle

    from raybench.storage import resolve

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPLANTED000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-in-pickle")
    blob = pickle.dumps(resolve("s3://bucket/prefix?endpoint_override=http://127.0.0.1:9").fs)
    assert b"planted-secret-in-pickle" not in blob and b"AKIAPLANTED000" not in blob


def test_tune_does_not_copy_credentials_into_runtime_envs() -> None:
    """Tune would put AWS keys into each trial's runtime_env, which Ray's agent logs verbatim."""
    from ray.tune.execution import class_cache

    from raybench.cluster import CREDENTIAL_ENV, stop_ray_copying_credentials

    stop_ray_copying_credentials()
    assert not set(CREDENTIAL_ENV) & class_cache.ENV_VARS_TO_PROPAGATE
