"""deploy/k8s/base: renders with `kubectl kustomize`, every object validates against the Kubernetes
JSON schemas (strict), every workload has probes, resources and a non-root security context, and the
base agrees with docker-compose.yml. No cluster needed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "k8s" / "base"
# The Kubernetes minor whose schemas the base is validated against (kubernetes-validate ships one
# schema set per minor); the oldest minor we intend to support.
K8S_VERSION = "1.31"
UID = 10001
SERVICES = {"auth", "catalog", "session-gateway", "runtime", "speech", "media", "edge-meta"}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH (it renders the kustomize base)")
    result = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs
    return docs


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}
    }


def test_validator_supports_the_pinned_version() -> None:
    assert any(v.startswith(f"{K8S_VERSION}.") for v in kubernetes_validate.utils.all_versions())


def test_every_object_matches_the_kubernetes_schema(objects: list[dict[str, Any]]) -> None:
    errors = {}
    for obj in objects:
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors[key] = f"{'.'.join(map(str, err.path))}: {err.message}"
        except kubernetes_validate.SchemaNotFoundError as err:
            errors[key] = err.message
    assert errors == {}


def test_validation_is_not_vacuous(objects: list[dict[str, Any]]) -> None:
    deployment = dict(of_kind(objects, "Deployment")["auth"])
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_one_deployment_and_service_per_service(
    objects: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    deployments, services = of_kind(objects, "Deployment"), of_kind(objects, "Service")
    assert set(deployments) == SERVICES and set(services) == SERVICES
    assert set(compose["services"]) >= SERVICES, "the same names as in docker-compose.yml"
    for name, svc in services.items():
        template = deployments[name]["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items(), f"Service {name} selects its pods"
        assert deployments[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (port,) = svc["spec"]["ports"]
        assert port["port"] == 8000
        container_ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert container_ports.get(port["targetPort"]) == 8000, f"Service {name} targets a named port"
    assert deployments["runtime"]["spec"]["replicas"] >= 2


def test_workloads_have_probes(objects: list[dict[str, Any]]) -> None:
    for name, dep in of_kind(objects, "Deployment").items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        probes = {k: container.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert all(probes.values()), f"{name}: {probes}"
        paths = {k: p["httpGet"]["path"] for k, p in probes.items()}
        ready = "/healthz" if name == "edge-meta" else "/readyz"
        assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": ready}, (
            name
        )
        assert all(p["httpGet"]["port"] == "http" for p in probes.values()), name


def test_workloads_have_resources(objects: list[dict[str, Any]]) -> None:
    for key, spec in pod_specs(objects).items():
        for container in spec["containers"] + spec.get("initContainers", []):
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{key}: requests"
            assert "memory" in resources.get("limits", {}), f"{key}: a memory limit"


def test_workloads_run_non_root_and_locked_down(objects: list[dict[str, Any]]) -> None:
    for key, spec in pod_specs(objects).items():
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser") == UID, key
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", key
        assert spec.get("automountServiceAccountToken") is False, key
        assert spec.get("enableServiceLinks") is False, f"{key}: no *_PORT env vars from Services"
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, key
            assert sc.get("readOnlyRootFilesystem") is True, key
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], key
            assert sc.get("runAsUser", UID) != 0, key
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{key}: a writable /tmp on a read-only root"


def test_config_and_secret_references_resolve(objects: list[dict[str, Any]]) -> None:
    config_maps, secrets = of_kind(objects, "ConfigMap"), of_kind(objects, "Secret")
    for key, spec in pod_specs(objects).items():
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, key
                if "secretRef" in source:
                    ref = source["secretRef"]
                    # An optional Secret is the operator's (LLM keys for the runtime): absent is fine.
                    assert ref["name"] in secrets or ref.get("optional") is True, key
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in config_maps[ref["name"]]["data"], f"{key}: {var['name']}"


def test_config_matches_compose_and_keeps_secrets_secret(
    objects: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    (config,) = of_kind(objects, "ConfigMap").values()
    (secret,) = of_kind(objects, "Secret").values()
    config_keys, secret_keys = (
        set(config["data"]),
        set(secret.get("data", {})) | set(secret.get("stringData", {})),
    )
    assert config_keys.isdisjoint(secret_keys)
    assert {"DATABASE_URL", "PARLEY_AUTH_TOKEN_SECRET", "PARLEY_CATALOG_SECRET_KEY"} <= secret_keys
    assert not any("SECRET" in k or "PASSWORD" in k or k == "DATABASE_URL" for k in config_keys)
    compose_env = set(compose["x-parley-env"])
    assert config_keys | secret_keys == compose_env, "the same settings as docker-compose.yml"


def test_writable_paths_are_on_volumes(objects: list[dict[str, Any]], compose: dict[str, Any]) -> None:
    """Settings that name a directory to write to point into a mounted volume (the root is read-only),
    with the same value as in docker-compose.yml."""
    for name, dep in of_kind(objects, "Deployment").items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for var in container.get("env", []):
            if var["name"].endswith("_DIR"):
                assert any(var["value"].startswith(m + "/") for m in mounts), f"{name}: {var['name']}"
                assert compose["services"][name]["environment"][var["name"]] == var["value"], name
    auth = of_kind(objects, "Deployment")["auth"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in auth["env"]} >= {"PARLEY_AUTH_MAIL_DIR"}


def test_images_and_commands_match_compose(objects: list[dict[str, Any]], compose: dict[str, Any]) -> None:
    deployments = of_kind(objects, "Deployment")
    for name, dep in deployments.items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        repo, _, tag = container["image"].partition(":")
        assert repo == compose["services"][name]["image"].split(":")[0], name
        assert tag and tag != "latest", f"{name}: a pinned tag"
        assert "command" not in container and "args" not in container, f"{name} runs the image's CMD"
    peers = {
        e["name"]: e.get("value")
        for e in deployments["edge-meta"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }["PARLEY_EDGE_PEERS"]
    assert peers == compose["services"]["edge-meta"]["environment"]["PARLEY_EDGE_PEERS"]


def test_migration_job(objects: list[dict[str, Any]], compose: dict[str, Any]) -> None:
    (job,) = of_kind(objects, "Job").values()
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] in {"Never", "OnFailure"}
    assert job["spec"].get("backoffLimit", 6) >= 1
    (container,) = spec["containers"]
    assert container["image"].split(":")[0] == compose["services"]["migrate"]["image"].split(":")[0]
    assert container["command"] == compose["services"]["migrate"]["command"]
