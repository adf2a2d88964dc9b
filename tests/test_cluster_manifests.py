"""cluster/: every manifest validates against its schema (KubeRay CRDs from ../shared/data/k8s-schemas,
Kubernetes' own via kubernetes-validate, Ray's cluster-launcher schema), with no unknown field, and
every entrypoint names a real bioray command and a workflow file that exists and loads."""

from __future__ import annotations

import copy
import gzip
import json
import re
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml

from bioray.cli import main as cli
from bioray.config import load_workflow

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
IMAGE_SOURCE = "/opt/bioray-src/"  # where cluster/Dockerfile puts the repository in the image
KUBERNETES_VERSION = "1.33"


def _documents() -> list[tuple[str, dict]]:
    found = []
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")) + sorted((CLUSTER / "k8s").glob("*.yaml")) + sorted(
            (CLUSTER / "mlflow").glob("*.yaml")):
        for number, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document:
                found.append((f"{path.relative_to(REPO)}#{number}", document))
    return found


DOCUMENTS = _documents()


def _crd_schema(kind: str, data_root: Path) -> dict:
    plural = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayCronJob": "raycronjobs"}[kind]
    with gzip.open(data_root / "k8s-schemas" / "kuberay" / f"ray.io_{plural}.yaml.gz") as stream:
        crd = yaml.safe_load(stream)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def _unknown_fields(value, schema: dict, where: str) -> list[str]:
    """Fields the structural schema does not declare: Kubernetes would silently prune them."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict) and "properties" in schema:
        unknown = []
        for key, item in value.items():
            if key in schema["properties"]:
                unknown += _unknown_fields(item, schema["properties"][key], f"{where}.{key}")
            elif not schema.get("additionalProperties"):
                unknown.append(f"{where}.{key}")
        return unknown
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [u for key, item in value.items()
                for u in _unknown_fields(item, schema["additionalProperties"], f"{where}.{key}")]
    if isinstance(value, list) and "items" in schema:
        return [u for i, item in enumerate(value) for u in _unknown_fields(item, schema["items"], f"{where}[{i}]")]
    return []


def test_cluster_has_every_kind_of_manifest():
    kinds = {document["kind"] for _, document in DOCUMENTS}
    assert {"RayCluster", "RayJob", "RayCronJob", "PersistentVolumeClaim", "Deployment", "Service", "StatefulSet",
            "CronJob"} <= kinds
    assert (CLUSTER / "Dockerfile").is_file() and (CLUSTER / "aws" / "cluster.yaml").is_file()


@pytest.mark.parametrize("name, document", [d for d in DOCUMENTS if d[1]["apiVersion"] == "ray.io/v1"],
                         ids=[n for n, d in DOCUMENTS if d["apiVersion"] == "ray.io/v1"])
def test_kuberay_manifest_matches_the_crd(name, document, data_root):
    schema = _crd_schema(document["kind"], data_root)
    jsonschema.Draft7Validator(schema).validate(document)
    assert _unknown_fields(document.get("spec", {}), schema["properties"]["spec"], "spec") == [], name
    # every container spec inside is a valid Kubernetes PodSpec too (the CRD embeds it loosely)
    for template in _pod_templates(document):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": template["spec"]}
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def _pod_templates(document: dict) -> list[dict]:
    spec = document["spec"]
    cluster = spec.get("rayClusterSpec") or spec.get("jobTemplate", {}).get("rayClusterSpec") or spec
    groups = [cluster.get("headGroupSpec")] + list(cluster.get("workerGroupSpecs") or [])
    return [group["template"] for group in groups if group and "template" in group]


@pytest.mark.parametrize("name, document", [d for d in DOCUMENTS if d[1]["apiVersion"] != "ray.io/v1"],
                         ids=[n for n, d in DOCUMENTS if d["apiVersion"] != "ray.io/v1"])
def test_kubernetes_manifest_is_valid(name, document):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_a_misspelled_field_is_caught(data_root):
    """The checks above can fail: a typo the CRD would prune, a wrong type, an unknown PodSpec field."""
    document = next(d for _, d in DOCUMENTS if d["kind"] == "RayCluster")
    schema = _crd_schema("RayCluster", data_root)
    typo = {**document, "spec": {**document["spec"], "enableInTreeAutoscalling": True}}
    assert _unknown_fields(typo["spec"], schema["properties"]["spec"], "spec") == ["spec.enableInTreeAutoscalling"]
    wrong_type = {**document, "spec": {**document["spec"], "enableInTreeAutoscaling": "yes"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(wrong_type)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "c", "image": "i", "resource": {}}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    # the CronJob is validated whole, so a typo deep in its pod template is caught too
    cronjob = copy.deepcopy(next(d for _, d in DOCUMENTS if d["kind"] == "CronJob"))
    cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, KUBERNETES_VERSION, strict=True)


def test_cluster_launcher_config_matches_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "aws" / "cluster.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(config)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])  # not exposed


def _nested(value, key: str) -> list[dict]:
    """The items of every list called `key` anywhere inside value (env entries, containers)."""
    if isinstance(value, dict):
        own = value.get(key) if isinstance(value.get(key), list) else []
        return own + [e for item in value.values() for e in _nested(item, key)]
    if isinstance(value, list):
        return [e for item in value for e in _nested(item, key)]
    return []


def _entrypoints() -> list[tuple[str, str]]:
    """RayJob / RayCronJob entrypoints, and what a container's `ray job submit ... -- CMD` submits (CronJob)."""
    found = []
    for name, document in DOCUMENTS:
        spec = document.get("spec", {})
        for entrypoint in (spec.get("entrypoint"), spec.get("jobTemplate", {}).get("entrypoint")):
            if entrypoint:
                found.append((name, entrypoint))
        for container in _nested(document, "containers"):
            words = container.get("command", []) + container.get("args", [])
            if words[:3] == ["ray", "job", "submit"]:
                submitted = words[words.index("--") + 1:] if "--" in words else words  # no `--`: check fails
                found.append((name, shlex.join(submitted)))
    return found


def _check_entrypoint(name: str, entrypoint: str) -> None:
    words = shlex.split(entrypoint)
    if words[:3] == ["python", "-m", "bioray.cli"]:
        words = ["bioray", *words[3:]]
    assert words[0] == "bioray", f"{name}: {entrypoint!r} does not run bioray"
    assert words[1] in cli.commands, f"{name}: {words[1]!r} is not a bioray command"
    workflow = REPO / words[2].removeprefix(IMAGE_SOURCE)
    assert workflow.is_file(), f"{name}: no workflow file {words[2]}"
    load_workflow(workflow)  # keys and types valid


@pytest.mark.parametrize("name, entrypoint", _entrypoints(), ids=[n for n, _ in _entrypoints()])
def test_entrypoint_names_a_bioray_command_and_an_existing_workflow(name, entrypoint):
    _check_entrypoint(name, entrypoint)


def test_readme_and_cluster_readme_submit_commands_run_real_workflows():
    for readme in (REPO / "README.md", CLUSTER / "README.md"):
        commands = re.findall(r"ray job submit [^`]*?-- ((?:python -m bioray\.cli|bioray) [^\n`]+)", readme.read_text())
        assert commands, f"{readme.name} shows no `ray job submit ... -- bioray ...` command"
        for command in commands:
            _check_entrypoint(str(readme.relative_to(REPO)), command)
    with pytest.raises(AssertionError, match="not a bioray command"):
        _check_entrypoint("x", "bioray runn workflows/quickstart.yaml")


def test_dockerfile_builds_the_pinned_torch_and_copies_the_workflows():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    torch_pin = re.search(r'"(torch==[^"]+)"', pyproject).group(1)
    assert f'"{torch_pin}"' in dockerfile and "download.pytorch.org/whl/cu" in dockerfile
    assert "COPY workflows" in dockerfile and "DS_BUILD_FUSED_ADAM=1" in dockerfile
    assert '".[gpu]"' in dockerfile and "flash-attn" in pyproject  # the varlen attention kernel
    assert f"WORKDIR {IMAGE_SOURCE.rstrip('/')}" in dockerfile


def test_no_secret_is_written_into_the_manifests():
    """Credentials come from Secrets (secretKeyRef) or the environment, never as literal values."""
    for name, document in DOCUMENTS:
        for env in _nested(document, "env"):
            if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", env["name"]):
                assert "valueFrom" in env and "value" not in env, f"{name}: {env['name']} has a literal value"
    runtime_env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert not [k for k in runtime_env.get("env_vars", {}) if re.search(r"PASSWORD|SECRET|TOKEN", k)]


def test_scheduled_runs_never_overlap_and_reach_the_cluster(data_root):
    """Re-pretraining is scheduled twice over (RayCronJob, CronJob): neither may start a run while one is
    running, and the CronJob's submitter must reach the RayCluster's head with the operator's token."""
    kind = {document["kind"]: document for _, document in DOCUMENTS}
    cronjob, raycronjob, cluster = kind["CronJob"]["spec"], kind["RayCronJob"]["spec"], kind["RayCluster"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert cronjob["schedule"] == raycronjob["schedule"] and cronjob["timeZone"] == raycronjob["timeZone"]
    # The RayCronJob CRD has no concurrency field today (bioray's lock covers it); if a KubeRay update adds
    # one, it must be set to forbid overlap.
    if "concurrencyPolicy" in _crd_schema("RayCronJob", data_root)["properties"]["spec"]["properties"]:
        assert raycronjob.get("concurrencyPolicy") == "Forbid"
    assert raycronjob["jobTemplate"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    # KubeRay names the head Service <cluster>-head-svc and keeps the token in the Secret named after the
    # cluster (key auth_token) unless authOptions.secretName says otherwise.
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    secret = cluster["spec"]["authOptions"].get("secretName", name)
    container = _nested(cronjob, "containers")[0]
    assert f"--address=http://{name}-head-svc.{namespace}.svc:8265" in container["command"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "auth_token"}


def test_nothing_is_reachable_unauthenticated():
    """Ray's dashboard / job API and MLflow: token or basic auth on, and no Service outside the cluster."""
    kinds = {document["kind"] for _, document in DOCUMENTS}
    assert {"RayCluster", "Service", "Deployment"} <= kinds
    servers = []
    for name, document in DOCUMENTS:
        spec = document.get("spec", {})
        if document["kind"] == "Service":
            assert spec.get("type", "ClusterIP") == "ClusterIP", (
                f"{name}: a {spec['type']} Service is reachable from outside")
        if document["kind"] == "RayCluster":
            assert spec["authOptions"]["mode"] == "token", name
            assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", name
        if document["kind"] in ("RayJob", "RayCronJob"):  # they submit to the token-protected RayCluster
            assert "rayClusterSpec" not in json.dumps(document), f"{name} would start a cluster of its own"
        for container in _nested(document, "containers"):
            words = [*container.get("command", []), *container.get("args", [])]
            if "mlflow" in container["image"] + " ".join(words) and "server" in words:
                servers.append(name)
                assert "--app-name=basic-auth" in words, f"{name}: an MLflow server without auth"
    assert servers, "no MLflow server found in cluster/"
