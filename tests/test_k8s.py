"""k8s/ manifests: strict KubeRay CRD validation, pinned Ray version, entrypoints, pod security."""
from __future__ import annotations

import copy
import functools
import re
import shlex
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from raybench.config import load_spec

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
CRDS = REPO.parent / "shared" / "kuberay-crds"
IMAGE_ROOT = "/home/ray/raybench/"  # WORKDIR of k8s/Dockerfile: the checkout inside the image
RAY_KINDS = ("RayCluster", "RayJob")
CORE_KINDS = {("v1", "Secret"), ("v1", "Service"), ("v1", "PersistentVolumeClaim"),
              ("apps/v1", "Deployment"), ("batch/v1", "Job")}
SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|ROOT_USER", re.I)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def pinned_ray() -> str:
    """The ray version pinned in pyproject.toml (ray[...]==X)."""
    match = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text())
    assert match, "pyproject.toml pins ray[...]==X.Y.Z"
    return match.group(1)


def manifests() -> list[tuple[str, int, dict[str, Any]]]:
    """(file name, document index, document) of every YAML document under k8s/."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                docs.append((path.name, i, doc))
    return docs


def _ids(docs: list[tuple[str, int, dict[str, Any]]]) -> list[str]:
    return [f"{name}#{i}:{doc.get('kind')}" for name, i, doc in docs]


DOCS = manifests()
RAY_DOCS = [d for d in DOCS if d[2].get("kind") in RAY_KINDS]


def strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever it lists ``properties``.

    Kubernetes prunes or (with strict field validation) rejects unknown fields; jsonschema
    ignores them unless told. Objects marked ``x-kubernetes-preserve-unknown-fields`` stay open.
    """
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def crd_schema(kind: str, strict_fields: bool = True) -> dict[str, Any]:
    """The ``v1`` OpenAPI schema of a KubeRay kind from ../shared/kuberay-crds."""
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    if not path.is_file():
        pytest.skip(f"KubeRay CRDs not found at {CRDS}")
    crd = yaml.load(path.read_text(), Loader=_Loader)
    assert crd["spec"]["names"]["kind"] == kind
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = v1["schema"]["openAPIV3Schema"]
    return strict(schema) if strict_fields else schema


def schema_errors(doc: dict[str, Any], strict_fields: bool = True) -> list[str]:
    validator = jsonschema.Draft7Validator(crd_schema(doc["kind"], strict_fields))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def cluster_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The RayCluster specs of a RayCluster or RayJob document."""
    if doc["kind"] == "RayCluster":
        return [doc["spec"]]
    return [doc["spec"]["rayClusterSpec"]] if "rayClusterSpec" in doc["spec"] else []


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template in a document."""
    kind = doc["kind"]
    if kind in ("Deployment", "Job"):
        yield kind, doc["spec"]["template"]["spec"]
    if kind == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        yield "submitter", doc["spec"]["submitterPodTemplate"]["spec"]
    for spec in cluster_specs(doc) if kind in RAY_KINDS else []:
        yield "head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"worker group {group['groupName']}", group["template"]["spec"]


def ray_containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for where, pod in pod_specs(doc):
        for container in pod["containers"]:
            yield where, container


# --- strict schema validation -------------------------------------------------------------------

def test_every_manifest_has_a_known_kind() -> None:
    assert {d[2]["kind"] for d in DOCS} >= {"RayCluster", "RayJob", "Secret", "Deployment",
                                            "Service", "Job", "PersistentVolumeClaim"}
    for name, _, doc in DOCS:
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in CORE_KINDS or key in {("ray.io/v1", k) for k in RAY_KINDS}, (name, key)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), name


@pytest.mark.parametrize("name,index,doc", RAY_DOCS, ids=_ids(RAY_DOCS))
def test_kuberay_manifest_validates_strictly(name: str, index: int, doc: dict[str, Any]) -> None:
    assert schema_errors(doc) == []


def test_strict_validation_rejects_misspelled_fields() -> None:
    (doc,) = [d for name, _, d in DOCS if name == "raycluster.yaml"]
    assert schema_errors(doc) == []
    typo = copy.deepcopy(doc)
    group = typo["spec"]["workerGroupSpecs"][0]
    group["maxReplica"] = group.pop("maxReplicas")
    container = typo["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["securityContex"] = container.pop("securityContext")
    typo["spec"]["authOptions"]["mod"] = typo["spec"]["authOptions"].pop("mode")
    errors = schema_errors(typo)
    for field in ("maxReplica", "securityContex", "mod"):
        assert any(f"'{field}' was unexpected" in e for e in errors), (field, errors)
    # The schema as shipped lets the typos through (only "maxReplicas" is required): the
    # strictness is what catches them.
    assert not any("unexpected" in e for e in schema_errors(typo, strict_fields=False))


def test_rayjob_typo_is_rejected() -> None:
    (doc,) = [d for name, _, d in DOCS if name == "rayjob-smoke.yaml"]
    typo = copy.deepcopy(doc)
    typo["spec"]["preRunningDeadlineSecond"] = typo["spec"].pop("preRunningDeadlineSeconds")
    rule = typo["spec"]["deletionStrategy"]["deletionRules"][0]
    rule["condition"]["ttlSecond"] = rule["condition"].pop("ttlSeconds")
    errors = schema_errors(typo)
    for field in ("preRunningDeadlineSecond", "ttlSecond"):
        assert any(f"'{field}' was unexpected" in e for e in errors), (field, errors)
    bad = copy.deepcopy(doc)
    bad["spec"]["deletionStrategy"]["deletionRules"][0]["policy"] = "DeleteHead"
    assert any("'DeleteHead' is not one of" in e for e in schema_errors(bad))


# --- versions and images ----------------------------------------------------------------------

def test_ray_version_matches_the_pin_and_the_installed_ray() -> None:
    assert pinned_ray() == version("ray")
    for name, _, doc in RAY_DOCS:
        for spec in cluster_specs(doc):
            assert spec["rayVersion"] == pinned_ray(), name


@pytest.mark.parametrize("name,index,doc", RAY_DOCS, ids=_ids(RAY_DOCS))
def test_images_carry_the_pinned_ray_version(name: str, index: int, doc: dict[str, Any]) -> None:
    ray = re.escape(pinned_ray())
    for where, container in ray_containers(doc):
        tag = container["image"].rsplit(":", 1)[1]
        assert re.fullmatch(rf"(\d+\.\d+\.\d+-)?ray{ray}-py3\d+(-gpu)?", tag), (where, tag)
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        assert tag.endswith("-gpu") == bool(gpus), f"{where}: GPU image iff the pod asks for GPUs"


def test_dockerfile_builds_on_the_pinned_ray_image() -> None:
    text = (K8S / "Dockerfile").read_text()
    base = re.search(r"^ARG RAY_IMAGE=rayproject/ray:(\S+)$", text, re.M)
    assert base and base.group(1).startswith(f"{pinned_ray()}-py3"), base
    assert "FROM ${RAY_IMAGE}" in text and re.search(r"^USER 1000", text, re.M)
    py = base.group(1).split("-")[1]
    for name, _, doc in RAY_DOCS:
        for where, container in ray_containers(doc):
            assert f"-{py}" in container["image"], (name, where, "image built on the same Python")


def test_gpu_worker_groups_request_gpus_and_autoscale() -> None:
    (cluster,) = [d for name, _, d in DOCS if name == "raycluster.yaml"]
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] >= 1


# --- entrypoints --------------------------------------------------------------------------------

RAYJOBS = [d for d in RAY_DOCS if d[2]["kind"] == "RayJob"]
CACHE_MOUNT = "/cache"


def entrypoint_options(argv: list[str]) -> dict[str, Any]:
    """``--key value`` pairs of a ``raybench sweep`` command line; ``--set`` collects a list,
    a flag (``--resume``) maps to True."""
    opts: dict[str, Any] = {}
    i = 2
    while i < len(argv):
        key = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        if key == "--set":
            opts.setdefault(key, []).append(value)
        else:
            opts[key] = True if value is None else value
        i += 1 if value is None else 2
    return opts


@pytest.mark.parametrize("name,index,doc", RAYJOBS, ids=_ids(RAYJOBS))
def test_rayjob_entrypoint_runs_an_existing_spec(name: str, index: int,
                                                 doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    # KubeRay: deletionRules exclude shutdownAfterJobFinishes, and a global TTL needs it.
    assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec
    assert spec["deletionStrategy"]["deletionRules"] and spec["activeDeadlineSeconds"] > 0
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["raybench", "sweep"], argv
    opts = entrypoint_options(argv)
    config = opts["--config"]
    assert config.startswith(IMAGE_ROOT), f"{config}: a spec baked into the image (k8s/Dockerfile)"
    local = REPO / config[len(IMAGE_ROOT):]
    assert local.is_file(), local
    assert opts["--results"].startswith("s3://raybench/"), "results go to the MinIO bucket"
    loaded = load_spec(local, [f"results={opts['--results']}", *opts.get("--set", [])])
    assert loaded.results == opts["--results"]
    assert loaded.data.cache_dir == CACHE_MOUNT, "the decoded cache goes on its volume"
    assert local.stem in doc["metadata"]["name"]


def test_every_paper_scenario_has_a_rayjob() -> None:
    configs = {shlex.split(d["spec"]["entrypoint"])[3] for _, _, d in RAYJOBS}
    for spec in sorted((REPO / "jobs").glob("paper-scenario*.yaml")):
        assert f"{IMAGE_ROOT}jobs/{spec.name}" in configs
    assert f"{IMAGE_ROOT}jobs/smoke.yaml" in configs


# --- security and credentials -----------------------------------------------------------------

@pytest.mark.parametrize("name,index,doc", DOCS, ids=_ids(DOCS))
def test_pods_run_unprivileged_as_non_root(name: str, index: int, doc: dict[str, Any]) -> None:
    for where, pod in pod_specs(doc):
        pod_ctx = pod.get("securityContext", {})
        for container in pod["containers"] + pod.get("initContainers", []):
            ctx = container.get("securityContext", {})
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, (where, container)
            assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 0)) > 0, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("privileged", False) is False, where
            assert "ALL" in ctx.get("capabilities", {}).get("drop", []), where
    for spec in cluster_specs(doc) if doc["kind"] in RAY_KINDS else []:
        if spec.get("enableInTreeAutoscaling"):  # the autoscaler sidecar of the head pod
            ctx = spec["autoscalerOptions"]["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["runAsNonRoot"] is True
            assert "ALL" in ctx["capabilities"]["drop"]


def _secrets() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: {**d.get("stringData", {}), **d.get("data", {})}
            for _, _, d in DOCS if d["kind"] == "Secret"}


def test_secret_templates_hold_placeholders_only() -> None:
    secrets = _secrets()
    assert set(secrets) == {"raybench-s3", "raybench-ray-auth"}
    for name, data in secrets.items():
        for key, value in data.items():
            assert "REPLACE_ME" in value, f"{name}.{key} must be a placeholder"


@pytest.mark.parametrize("name,index,doc", DOCS, ids=_ids(DOCS))
def test_credentials_only_through_secret_key_refs(name: str, index: int,
                                                  doc: dict[str, Any]) -> None:
    secrets = _secrets()
    for where, pod in pod_specs(doc):
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if SECRET_ENV.search(env["name"]):
                    assert "value" not in env and ref, f"{where}: {env['name']} needs secretKeyRef"
                if ref:
                    assert ref["key"] in secrets[ref["name"]], (where, ref)


@pytest.mark.parametrize("name,index,doc", RAY_DOCS, ids=_ids(RAY_DOCS))
def test_token_authentication_is_on(name: str, index: int, doc: dict[str, Any]) -> None:
    for spec in cluster_specs(doc):
        auth = spec["authOptions"]
        assert auth["mode"] == "token"
        assert "auth_token" in _secrets()[auth["secretName"]]


def test_volume_claims_exist() -> None:
    claims = {d["metadata"]["name"] for _, _, d in DOCS if d["kind"] == "PersistentVolumeClaim"}
    for name, _, doc in DOCS:
        for where, pod in pod_specs(doc):
            for volume in pod.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims, (name, where)


# --- KubeRay conventions: retries, cleanup, deadlines, volumes ---------------------------------

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1}


def quantity(text: Any) -> int:
    """Bytes of a Kubernetes quantity such as ``8Gi`` (binary suffixes only here)."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|)", str(text))
    assert match, text
    return int(match.group(1)) * _UNITS[match.group(2)]


def _rules(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, int]]:
    """(condition kind, value) -> {policy: ttlSeconds}, refusing duplicates like KubeRay."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for rule in doc["spec"]["deletionStrategy"]["deletionRules"]:
        cond = rule["condition"]
        (kind,) = [k for k in ("jobStatus", "jobDeploymentStatus") if k in cond]
        policies = out.setdefault((kind, cond[kind]), {})
        assert rule["policy"] not in policies, f"duplicate rule {kind}={cond[kind]} {rule['policy']}"
        policies[rule["policy"]] = cond.get("ttlSeconds", 0)
    return out


@pytest.mark.parametrize("name,index,doc", RAYJOBS, ids=_ids(RAYJOBS))
def test_rayjob_retries_resume_the_sweep(name: str, index: int, doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    assert spec["backoffLimit"] >= 1  # each retry is a new RayCluster ...
    assert entrypoint_options(shlex.split(spec["entrypoint"]))["--resume"] is True  # ... resuming
    # HTTPMode: the operator submits through the Jobs API and polls it; no submitter pod whose
    # death fails a live job (kuberay#5100). KubeRay forbids retries in InteractiveMode.
    assert spec["submissionMode"] == "HTTPMode" and "submitterPodTemplate" not in spec
    assert "clusterSelector" not in spec  # KubeRay: backoffLimit is incompatible with it


@pytest.mark.parametrize("name,index,doc", RAYJOBS, ids=_ids(RAYJOBS))
def test_rayjob_cleanup_keeps_the_head_after_failure(name: str, index: int,
                                                     doc: dict[str, Any]) -> None:
    rules = _rules(doc)
    order = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")
    for (kind, value), policies in rules.items():  # KubeRay: Workers <= Cluster <= Self TTLs
        ttls = [policies[p] for p in order if p in policies]
        assert ttls == sorted(ttls), (kind, value, policies)
    ok = rules[("jobStatus", "SUCCEEDED")]
    assert "DeleteWorkers" not in ok and ok["DeleteCluster"] <= 900 < ok["DeleteSelf"]
    for key in (("jobStatus", "FAILED"), ("jobDeploymentStatus", "Failed")):
        failed = rules[key]
        assert failed["DeleteWorkers"] == 0  # GPUs go back at once
        assert failed["DeleteCluster"] >= 3600 and "DeleteSelf" not in failed  # head: logs
    # A failed Ray job matches both conditions; the earliest DeleteCluster would win.
    assert rules[("jobDeploymentStatus", "Failed")]["DeleteCluster"] == \
        rules[("jobStatus", "FAILED")]["DeleteCluster"]
    cluster = doc["spec"]["rayClusterSpec"]
    # KubeRay rejects DeleteWorkers on autoscaled clusters: RayJob clusters have fixed sizes,
    # which also makes "Ready" mean every worker is up (what preRunningDeadlineSeconds waits for).
    assert not cluster.get("enableInTreeAutoscaling", False)
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] == group["replicas"] == group["maxReplicas"] >= 1


@pytest.mark.parametrize("name,index,doc", RAYJOBS, ids=_ids(RAYJOBS))
def test_rayjob_fails_if_its_cluster_never_schedules(name: str, index: int,
                                                     doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    assert 300 <= spec["preRunningDeadlineSeconds"] <= 3600
    assert spec["preRunningDeadlineSeconds"] * (spec["backoffLimit"] + 1) < \
        spec["activeDeadlineSeconds"]


def _pod_volumes(pod: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(volume name -> volume, mount path -> volume name) of a single-container pod."""
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    return {v["name"]: v for v in pod.get("volumes", [])}, mounts


@pytest.mark.parametrize("name,index,doc", RAY_DOCS, ids=_ids(RAY_DOCS))
def test_every_group_has_shm_and_a_sized_image_cache(name: str, index: int,
                                                     doc: dict[str, Any]) -> None:
    for where, pod in pod_specs(doc):
        if where == "submitter":
            continue
        volumes, mounts = _pod_volumes(pod)
        (container,) = pod["containers"]
        memory = quantity(container["resources"]["limits"]["memory"])
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory" and quantity(shm["sizeLimit"]) <= memory // 2, where
        cache = volumes[mounts[CACHE_MOUNT]]
        assert "persistentVolumeClaim" in cache or quantity(cache["emptyDir"]["sizeLimit"]) > 0
        disk = sum(quantity(v["emptyDir"]["sizeLimit"]) for v in volumes.values()
                   if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        # Disk-backed emptyDirs count against the pod's ephemeral storage: request their sum.
        assert quantity(requests["ephemeral-storage"]) >= disk, where
        assert quantity(limits["ephemeral-storage"]) >= quantity(requests["ephemeral-storage"])


def test_cache_sizes_in_the_readme_are_the_arithmetic() -> None:
    """k8s/README.md sizes the cache as images x (224^2 + 299^2) bytes (uint8 grayscale)."""
    text = (K8S / "README.md").read_text()
    per_image = 224 * 224 + 299 * 299
    assert per_image == 139_577 and f"{per_image:,} bytes" in text
    paper = 5_951 + 667  # the paper's scenario-2 training + test images
    for images in (paper, 200_000):
        gib = images * per_image / 2**30
        assert f"| {images:,} | {images * per_image / 1e9:.2f} GB ({gib:.2f} GiB) |" in text
    paper_job = next(d for n, _, d in RAYJOBS if n == "rayjob-paper.yaml")
    pod = paper_job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    volumes, mounts = _pod_volumes(pod)
    limit = quantity(volumes[mounts[CACHE_MOUNT]]["emptyDir"]["sizeLimit"])
    assert limit >= 2 * paper * per_image  # room for a rebuilt entry next to the old one
