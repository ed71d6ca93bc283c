# One piece (769 lines): every overlay is rendered once (kubectl kustomize) and all properties are
# checked on those rendered objects; splitting would render them again per module.
"""deploy/k8s/overlays: each overlay renders with `kubectl kustomize`; every object validates against the
Kubernetes 1.31 schemas of `kubernetes-validate` (strict) and the ScaledObject against the vendored KEDA
schema; then the properties the manifests promise, checked on the rendered objects: routing (the
Ingress routes like the compose edge), network policies (evaluated, not just read), graceful shutdown,
autoscaling, disruption budgets, locked-down pods, and agreement with compose and the infrastructure
references. No cluster needed."""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from parley_common import subjects
from parley_devstack import edge

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "production", "production-keda")
K8S_VERSION = "1.31"
KEDA_SCHEMA = REPO / "deploy" / "schemas" / "keda" / "scaledobject-v1alpha1.json"
# deploy/schemas/keda/README.md says where the file comes from; a new copy is a deliberate change.
KEDA_SCHEMA_SHA256 = "cc4b8187b7b80d4409431de01e334f232829faa4c24c2f6712827b183d3d7378"
# The nats-jetstream scaler's parameters (KEDA docs, "NATS JetStream" scaler, 2.8 to 2.16+).
NATS_JETSTREAM_PARAMS = {
    "natsServerMonitoringEndpoint",
    "account",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}
SERVICES = {"auth", "catalog", "session-gateway", "runtime", "speech", "media", "edge-meta"}
EDGE_FACING = {"auth", "catalog", "session-gateway", "edge-meta"}
# Caddy upstream names (test_caddy.py / conftest EDGE_ROUTE_TABLE) -> Kubernetes Service names.
UPSTREAM_SERVICE = {
    "auth": "auth",
    "catalog": "catalog",
    "session_gateway": "session-gateway",
    "edge_meta": "edge-meta",
}
INFRA_PORTS = {"nats": 4222, "redis": 6379, "postgres": 5432}


# ---- rendering -------------------------------------------------------------------------------------
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not on PATH (it renders the kustomize overlays)")
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of deploy/k8s where the production overlay has the example secrets.env."""
    root = tmp_path_factory.mktemp("k8s")
    shutil.copytree(K8S, root / "k8s")
    production = root / "k8s" / "overlays" / "production"
    shutil.copy(production / "secrets.env.example", production / "secrets.env")
    return root / "k8s"


def render(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs
    return docs


@pytest.fixture(scope="module")
def rendered(workdir: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: render(workdir / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, list[dict[str, Any]]]) -> tuple[str, Any]:
    name: str = request.param
    return name, rendered[name]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": o
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}
    }


def container(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    (c,) = of_kind(objects, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = c
    return found


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("parley-config")
    ]
    return dict(cm["data"])


def secret_data(objects: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    import base64

    (secret,) = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith(prefix)]
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def test_every_overlay_is_tested() -> None:
    assert {p.name for p in (K8S / "overlays").iterdir() if p.is_dir()} == set(OVERLAYS)


def test_production_does_not_render_without_its_secrets() -> None:
    """Like compose's `${VAR:?}`: no secrets.env, no manifests (never placeholder secrets)."""
    production = K8S / "overlays" / "production"
    if (production / "secrets.env").exists():
        pytest.skip("a local secrets.env exists in the production overlay")
    result = subprocess.run(
        [kubectl(), "kustomize", str(production)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "secrets.env" in result.stderr
    assert "secrets.env" in (production / ".gitignore").read_text().split()
    example = dict(
        line.split("=", 1)
        for line in (production / "secrets.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(example) == {"DATABASE_URL", "PARLEY_AUTH_TOKEN_SECRET", "PARLEY_CATALOG_SECRET_KEY"}


# ---- schemas ---------------------------------------------------------------------------------------
def test_every_object_matches_the_kubernetes_schema(overlay: tuple[str, Any]) -> None:
    name, objects = overlay
    errors = {}
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked against the KEDA schema below
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors[key] = f"{'.'.join(map(str, err.path))}: {err.message}"
        except kubernetes_validate.SchemaNotFoundError as err:
            errors[key] = err.message
    assert errors == {}, name


@pytest.fixture(scope="module")
def keda_validator() -> Any:
    schema = json.loads(KEDA_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def scaled_object(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (so,) = of_kind(rendered["production-keda"], "ScaledObject").values()
    return so


def test_vendored_keda_schema_is_the_documented_one() -> None:
    assert hashlib.sha256(KEDA_SCHEMA.read_bytes()).hexdigest() == KEDA_SCHEMA_SHA256
    assert KEDA_SCHEMA_SHA256 in (KEDA_SCHEMA.parent / "README.md").read_text()


def test_scaledobject_matches_the_keda_schema(
    rendered: dict[str, list[dict[str, Any]]], keda_validator: Any
) -> None:
    so = scaled_object(rendered)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in keda_validator.iter_errors(so)]
    assert errors == []
    # Its HPA behavior is a Kubernetes HorizontalPodAutoscalerBehavior: check it with that schema.
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "probe"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "runtime"},
            "maxReplicas": 2,
            "behavior": behavior,
        },
    }
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "minReplicaCuont"), 1),  # unknown field
        (("spec", "maxReplicaCount"), "30"),  # wrong type
        (("spec", "triggers", 0, "metadata", "lagThreshold"), 200),  # metadata values are strings
        (("spec", "scaleTargetRef", "nmae"), "runtime"),  # unknown nested field
    ],
)
def test_keda_schema_check_is_not_vacuous(
    rendered: dict[str, list[dict[str, Any]]], keda_validator: Any, path: tuple[Any, ...], value: Any
) -> None:
    broken = copy.deepcopy(scaled_object(rendered))
    node = broken
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    assert list(keda_validator.iter_errors(broken)), f"accepted {path}={value!r}"


def test_keda_scales_the_runtime_on_the_sessions_queue(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["production-keda"]
    so = scaled_object(rendered)
    spec = so["spec"]
    assert spec["scaleTargetRef"]["name"] == "runtime" and "runtime" in of_kind(objects, "Deployment")
    assert (
        so["metadata"].get("namespace") == of_kind(objects, "Deployment")["runtime"]["metadata"]["namespace"]
    )
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert "runtime" not in hpas, "KEDA owns the runtime's HPA: no second one"
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == {"speech"}
    assert 2 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    by_type = {t["type"]: t for t in spec["triggers"]}
    assert set(by_type) == {"nats-jetstream", "cpu"}
    meta = by_type["nats-jetstream"]["metadata"]
    assert set(meta) <= NATS_JETSTREAM_PARAMS, f"unknown parameters {set(meta) - NATS_JETSTREAM_PARAMS}"
    assert {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"} <= set(meta)
    assert int(meta["lagThreshold"]) > 0 and int(meta.get("activationLagThreshold", "0")) >= 0
    assert meta.get("useHttps", "false") in {"true", "false"}
    # KEDA builds http(s)://<endpoint>/jsz itself: host:port, no scheme, NATS's monitoring port.
    endpoint = meta["natsServerMonitoringEndpoint"]
    assert "://" not in endpoint and endpoint.rsplit(":", 1)[1] == "8222"
    nats_values = yaml.safe_load((K8S / "overlays" / "production" / "infra" / "nats-values.yaml").read_text())
    assert nats_values["config"]["monitor"]["port"] == 8222
    assert endpoint.split(".")[:2] == ["nats-headless", "nats"], "the chart's per-pod monitoring Service"
    assert by_type["cpu"].get("metricType") == "Utilization" and int(by_type["cpu"]["metadata"]["value"]) > 0


def test_keda_names_parleys_stream_and_consumer(rendered: dict[str, list[dict[str, Any]]]) -> None:
    stream, consumer = subjects.SESSIONS_STREAM, subjects.RUNTIME_SESSIONS_CONSUMER
    meta = next(t for t in scaled_object(rendered)["spec"]["triggers"] if t["type"] == "nats-jetstream")
    assert (meta["metadata"]["stream"], meta["metadata"]["consumer"]) == (stream, consumer)


# ---- autoscaling and graceful shutdown ------------------------------------------------------------
@pytest.mark.parametrize("worker", ["runtime", "speech"])
def test_production_autoscales_the_workers_on_cpu(
    rendered: dict[str, list[dict[str, Any]]], worker: str
) -> None:
    objects = rendered["production"]
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == {"runtime", "speech"}
    spec = hpas[worker]["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": worker}
    assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in of_kind(objects, "Deployment")[worker]["spec"], "the HPA owns the count"
    assert container(objects, worker)["resources"]["requests"]["cpu"], "Utilization needs a CPU request"
    down, up = spec["behavior"]["scaleDown"], spec["behavior"]["scaleUp"]
    assert down["stabilizationWindowSeconds"] >= 60 > up.get("stabilizationWindowSeconds", 0)


def grace(objects: list[dict[str, Any]], name: str) -> int:
    return int(
        of_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )


def compose_seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return int(match.group(1))


def test_runtime_grace_period_covers_the_drain(overlay: tuple[str, Any], compose: dict[str, Any]) -> None:
    """terminationGracePeriodSeconds = PARLEY_RUNTIME_DRAIN_TIMEOUT_S + margin, no preStop delay on the
    worker (the drain starts at SIGTERM), and compose stops the worker with the same numbers."""
    _, objects = overlay
    runtime = container(objects, "runtime")
    drain = float(env_of(runtime)["PARLEY_RUNTIME_DRAIN_TIMEOUT_S"])
    assert drain == 25, "the documented default (docs/operations.md)"
    assert grace(objects, "runtime") >= drain + 10
    assert "lifecycle" not in runtime
    compose_runtime = compose["services"]["runtime"]
    assert float(compose_runtime["environment"]["PARLEY_RUNTIME_DRAIN_TIMEOUT_S"]) == drain
    assert compose_seconds(compose_runtime["stop_grace_period"]) == grace(objects, "runtime")
    gateway = compose["services"]["session-gateway"]
    assert compose_seconds(gateway["stop_grace_period"]) == grace(objects, "session-gateway")


# The services built on the service kit: their lifespan's shutdown steps are bounded.
KIT_SERVICES = ["auth", "catalog", "session-gateway", "runtime", "speech", "media"]


def test_each_shutdown_step_is_cut_before_the_grace_period_ends(
    overlay: tuple[str, Any], compose: dict[str, Any]
) -> None:
    """PARLEY_SHUTDOWN_STEP_TIMEOUT_S ends a stuck step, and logs its name, before the SIGKILL:
    below the grace period less the preStop sleep, with room for the steps after it; above the
    runtime's drain, which is one of its steps; compose sets the same."""
    _, objects = overlay
    for name in KIT_SERVICES:
        c = container(objects, name)
        step = float(env_of(c)["PARLEY_SHUTDOWN_STEP_TIMEOUT_S"])
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert 0 < step <= grace(objects, name) - sleep - 5, name
        environment = compose["services"][name]["environment"]
        assert float(environment["PARLEY_SHUTDOWN_STEP_TIMEOUT_S"]) == step, name
    runtime = env_of(container(objects, "runtime"))
    assert (
        float(runtime["PARLEY_SHUTDOWN_STEP_TIMEOUT_S"])
        >= float(runtime["PARLEY_RUNTIME_DRAIN_TIMEOUT_S"]) + 5
    )


def test_http_services_stop_taking_traffic_before_sigterm(overlay: tuple[str, Any]) -> None:
    _, objects = overlay
    for name in EDGE_FACING:
        sleep = container(objects, name)["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert 0 < sleep < grace(objects, name) - 10, name
    for name, dep in of_kind(objects, "Deployment").items():
        rolling = dep["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0, f"{name}: a rolling update never lowers capacity"


def test_every_service_has_a_disruption_budget(overlay: tuple[str, Any]) -> None:
    _, objects = overlay
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for name, dep in of_kind(objects, "Deployment").items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        matching = [
            p for p in pdbs.values() if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, f"{name}: exactly one PDB"
        spec = matching[0]["spec"]
        # maxUnavailable never blocks a node drain, whatever the replica count.
        assert "minAvailable" not in spec and spec["maxUnavailable"] == 1, name


# ---- pods --------------------------------------------------------------------------------------
def test_pods_meet_the_restricted_pod_security_standard(overlay: tuple[str, Any]) -> None:
    _, objects = overlay
    (namespace,) = of_kind(objects, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for key, obj in workloads(objects).items():
        assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], key
        spec = obj["spec"]["template"]["spec"]
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) != 0, key
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", key
        assert spec.get("automountServiceAccountToken") is False, key
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), key
        assert all("hostPath" not in v for v in spec.get("volumes", [])), key
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, key
            assert sc.get("readOnlyRootFilesystem") is True, key
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], key
            assert not sc.get("capabilities", {}).get("add"), key
            assert sc.get("runAsUser", 1) != 0, key
            requests = c.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests) and "memory" in c["resources"].get("limits", {}), key
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{key}: pinned tag"
            if obj["kind"] != "Job":
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert probe in c, f"{key}: {probe}"


def test_metrics_are_scraped_on_every_service(overlay: tuple[str, Any]) -> None:
    _, objects = overlay
    for name, dep in of_kind(objects, "Deployment").items():
        annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/path") == "/metrics", name
        ports = {p["containerPort"] for p in container(objects, name)["ports"]}
        assert int(annotations["prometheus.io/port"]) in ports, name


def test_overlay_config_keeps_every_base_setting(overlay: tuple[str, Any], compose: dict[str, Any]) -> None:
    _, objects = overlay
    keys = set(config(objects)) | set(secret_data(objects, "parley-secrets"))
    assert keys >= set(compose["x-parley-env"]), "no setting of the base is lost"
    assert not any("SECRET" in k or "PASSWORD" in k or k == "DATABASE_URL" for k in config(objects))


# ---- routing -----------------------------------------------------------------------------------
@dataclass
class Location:
    path: str
    service: str
    ingress: str
    rewrite: str | None


def nginx_locations(objects: list[dict[str, Any]]) -> list[Location]:
    """ingress-nginx with use-regex: every path a case-insensitive regexp anchored at the start,
    locations ordered by descending path length, first match wins."""
    locations = []
    for ing in of_kind(objects, "Ingress").values():
        annotations = ing["metadata"].get("annotations", {})
        assert annotations.get("nginx.ingress.kubernetes.io/use-regex") == "true", ing["metadata"]["name"]
        assert ing["spec"]["ingressClassName"] == "nginx"
        (rule,) = ing["spec"]["rules"]
        for p in rule["http"]["paths"]:
            assert p["pathType"] == "ImplementationSpecific", "regex paths need ImplementationSpecific"
            re.compile(p["path"])
            locations.append(
                Location(
                    p["path"],
                    p["backend"]["service"]["name"],
                    ing["metadata"]["name"],
                    annotations.get("nginx.ingress.kubernetes.io/rewrite-target"),
                )
            )
    paths = [loc.path for loc in locations]
    assert len(paths) == len(set(paths)), "a path appears twice"
    return sorted(locations, key=lambda loc: len(loc.path), reverse=True)


def route(locations: list[Location], path: str) -> Location:
    path = path.split("?", 1)[0]
    for loc in locations:
        if re.match(loc.path, path, flags=re.IGNORECASE):
            return loc
    raise AssertionError(f"no location for {path}")


def test_ingress_routes_like_the_compose_edge(overlay: tuple[str, Any], edge_routes: dict[str, str]) -> None:
    _, objects = overlay
    locations = nginx_locations(objects)
    wrong = {}
    for path, upstream in edge_routes.items():
        loc = route(locations, path)
        rewritten = path.startswith("/metrics")  # not public: see test_metrics_are_not_public
        if loc.service != UPSTREAM_SERVICE[upstream] or (loc.rewrite is not None) != rewritten:
            wrong[path] = (loc.service, UPSTREAM_SERVICE[upstream])
    assert wrong == {}, "path: (ingress, compose edge)"
    for path in ("/nope", "/", "/userz", "/api/unknown"):
        assert route(locations, path).service == "edge-meta", path
    services = of_kind(objects, "Service")
    for ing in of_kind(objects, "Ingress").values():
        for p in ing["spec"]["rules"][0]["http"]["paths"]:
            backend = p["backend"]["service"]
            assert backend["port"]["name"] in {
                port["name"] for port in services[backend["name"]]["spec"]["ports"]
            }


def test_metrics_are_not_public(overlay: tuple[str, Any]) -> None:
    _, objects = overlay
    locations = nginx_locations(objects)
    for path in ("/metrics", "/metrics/", "/METRICS"):
        loc = route(locations, path)
        assert loc.service == "edge-meta" and loc.rewrite not in {None, "/metrics"}, path
    assert all(route(locations, p).rewrite is None for p in ("/readyz", "/openapi.json", "/docsx"))


def test_ingress_keeps_websockets_and_streams_open(overlay: tuple[str, Any]) -> None:
    _, objects = overlay
    annotations = of_kind(objects, "Ingress")["parley"]["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    # Longer than any quiet period of a live socket (the chat protocol's heartbeat is 15 s).
    assert int(annotations[prefix + "proxy-read-timeout"]) >= 3600
    assert int(annotations[prefix + "proxy-send-timeout"]) >= 3600
    assert annotations[prefix + "proxy-buffering"] == "off", "SSE events must not wait in a buffer"


def test_routes_match_make_run(overlay: tuple[str, Any]) -> None:
    table = edge.EDGE_ROUTES
    _, objects = overlay
    locations = nginx_locations(objects)
    wrong = {}
    for owner, patterns in table:
        for pattern in patterns:
            inner = pattern.rstrip("*").replace("*", "x1")
            for path in {inner, inner.rstrip("/") + "/y2"} if pattern.endswith("*") else {inner}:
                if route(locations, path).service != UPSTREAM_SERVICE[owner]:
                    wrong[path] = (route(locations, path).service, owner)
    assert wrong == {}, "path: (ingress, make run)"


# ---- network policies, evaluated ------------------------------------------------------------------
@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[tuple[str, int], ...] = ()
    ip: str = "10.244.0.10"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class External:
    ip: str


Endpoint = Pod | External


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        net = ipaddress.ip_network(block["cidr"])
        if ip.version != net.version or ip not in net:
            return False
        return not any(
            ip in ipaddress.ip_network(e)
            for e in block.get("except", [])
            if ipaddress.ip_network(e).version == ip.version
        )
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace}):
            return False
    elif other.namespace != policy_ns:
        return False
    return matches(peer.get("podSelector", {}), other.label_map)


def port_matches(rule_ports: list[dict[str, Any]] | None, dest: Endpoint, port: int) -> bool:
    """TCP only (what Parley speaks); a named port is the destination pod's container port name."""
    if not rule_ports:
        return True
    named = dict(dest.ports) if isinstance(dest, Pod) else {}
    for p in rule_ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in p:
            return True
        if (named.get(p["port"]) if isinstance(p["port"], str) else p["port"]) == port:
            return True
    return False


@dataclass
class Network:
    policies: list[dict[str, Any]]
    decisions: list[str] = field(default_factory=list)

    def _allowed(self, pod: Pod, direction: str, other: Endpoint, dest: Endpoint, port: int) -> bool:
        selecting = [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == pod.namespace
            and matches(p["spec"]["podSelector"], pod.label_map)
            and direction in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not selecting:
            return True
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in selecting:
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                if (
                    peers is None or any(peer_matches(pe, pod.namespace, other) for pe in peers)
                ) and port_matches(rule.get("ports"), dest, port):
                    return True
        return False

    def can_connect(self, src: Endpoint, dst: Endpoint, port: int) -> bool:
        egress_ok = not isinstance(src, Pod) or self._allowed(src, "Egress", dst, dst, port)
        ingress_ok = not isinstance(dst, Pod) or self._allowed(dst, "Ingress", src, dst, port)
        return egress_ok and ingress_ok


def pods_of(objects: list[dict[str, Any]]) -> dict[str, Pod]:
    pods = {}
    for i, obj in enumerate(workloads(objects).values()):
        template = obj["spec"]["template"]
        ports = tuple(
            (p["name"], p["containerPort"])
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
            if "name" in p
        )
        pods[obj["metadata"]["name"]] = Pod(
            obj["metadata"]["namespace"],
            tuple(sorted(template["metadata"]["labels"].items())),
            ports,
            f"10.244.1.{i + 1}",
        )
    return pods


def outside(namespace: str, **labels: str) -> Pod:
    return Pod(namespace, tuple(sorted(labels.items())), (("http", 8000), ("otlp-http", 4318)), "10.244.9.9")


def infra_pods(name: str, objects: list[dict[str, Any]]) -> dict[str, Pod]:
    """Where NATS/Redis/PostgreSQL run: the dev overlay's StatefulSets, or in production the pods
    of the charts / operators of overlays/production/infra (their namespaces and labels)."""
    pods = pods_of(objects)
    if name == "dev":
        return {k: pods[k] for k in INFRA_PORTS}
    return {
        "nats": outside("nats", **{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats"}),
        "redis": outside("valkey", **{"app.kubernetes.io/name": "valkey"}),
        "postgres": outside(
            "postgres", **{"cnpg.io/cluster": "parley-pg", "cnpg.io/instanceRole": "primary"}
        ),
    }


def test_network_policies_allow_only_what_parley_needs(overlay: tuple[str, Any]) -> None:
    name, objects = overlay
    net = Network(list(of_kind(objects, "NetworkPolicy").values()))
    # Deny by default: a policy selects every pod for both directions and allows nothing, so a pod
    # added later is isolated until a policy lets it talk.
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in net.policies
    ), "a default-deny policy"
    pods, infra = pods_of(objects), infra_pods(name, objects)
    controller = outside("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"})
    prometheus = outside("monitoring", **{"app.kubernetes.io/name": "prometheus"})
    stranger = outside("default", app="curl")
    collector = outside("observability", **{"app.kubernetes.io/name": "otel-collector"})
    dns = External("10.96.0.10")
    # from outside: only through the Ingress controller, only to the edge-facing services
    for svc in EDGE_FACING:
        assert net.can_connect(controller, pods[svc], 8000), f"ingress controller -> {svc}"
        assert not net.can_connect(stranger, pods[svc], 8000), f"stranger -> {svc}"
    assert not net.can_connect(controller, pods["runtime"], 8000), "runtime workers are not edge-facing"
    # between services: only edge-meta's readiness/OpenAPI aggregation; the rest goes over NATS
    for svc in SERVICES - {"edge-meta"}:
        assert net.can_connect(pods["edge-meta"], pods[svc], 8000), f"edge-meta -> {svc}"
        for other in SERVICES - {svc, "edge-meta"}:
            if (other, svc) == ("media", "session-gateway"):  # each call's /realtime socket
                assert net.can_connect(pods[other], pods[svc], 8000), f"{other} -> {svc}"
                continue
            assert not net.can_connect(pods[other], pods[svc], 8000), f"{other} -> {svc}"
    # to the infrastructure: every Parley pod (services and the migration Job), on its port only
    for src in [*SERVICES, "parley-migrate"]:
        for target, port in INFRA_PORTS.items():
            assert net.can_connect(pods[src], infra[target], port), f"{src} -> {target}:{port}"
        assert not net.can_connect(pods[src], infra["postgres"], 6379)
        assert net.can_connect(pods[src], dns, 53)
        assert net.can_connect(pods[src], collector, 4318), f"{src} -> OTLP collector"
        assert not net.can_connect(pods[src], stranger, 8000)
    if name == "dev":  # production infrastructure lives in namespaces this repository does not police
        for target, port in INFRA_PORTS.items():
            assert not net.can_connect(stranger, infra[target], port), f"stranger -> {target}"
    # to the world: LLM providers and webhooks from the runtime, cloud speech (HTTPS only) from the
    # speech workers, never private addresses
    assert net.can_connect(pods["runtime"], External("203.0.113.7"), 443)
    assert net.can_connect(pods["runtime"], External("2001:db8::7"), 443)
    assert not net.can_connect(pods["runtime"], External("10.1.2.3"), 443)
    assert not net.can_connect(pods["runtime"], External("169.254.169.254"), 80), "cloud metadata"
    assert not net.can_connect(pods["runtime"], External("203.0.113.7"), 22)
    assert net.can_connect(pods["speech"], External("203.0.113.7"), 443)
    assert not net.can_connect(pods["speech"], External("203.0.113.7"), 80)
    assert not net.can_connect(pods["speech"], External("10.1.2.3"), 443)
    assert not net.can_connect(pods["speech"], External("169.254.169.254"), 443), "cloud metadata"
    assert not net.can_connect(controller, pods["speech"], 8000), "speech workers are not edge-facing"
    # WebRTC: a call's media reaches the media workers (and leaves them) over UDP, never link-local.
    assert not net.can_connect(controller, pods["media"], 8000), "media workers are not edge-facing"
    assert net.can_connect(pods["media"], External("203.0.113.7"), 3478), "TURN over TCP"
    assert not net.can_connect(pods["media"], External("169.254.169.254"), 443), "cloud metadata"
    assert not net.can_connect(pods["media"], External("203.0.113.7"), 80)
    assert net.can_connect(pods["media"], External("203.0.113.7"), 443), "TURN over TLS on 443"
    for svc in SERVICES - {"runtime", "speech", "media"}:
        assert not net.can_connect(pods[svc], External("203.0.113.7"), 443), f"{svc} -> internet"
    assert net.can_connect(pods["auth"], External("203.0.113.25"), 587), "auth -> SMTP"
    # observability: Prometheus scrapes every Parley pod
    for svc in SERVICES:
        assert net.can_connect(prometheus, pods[svc], 8000), f"prometheus -> {svc}"


def test_network_evaluator_is_not_vacuous(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["dev"]
    policies = of_kind(objects, "NetworkPolicy")
    pods = pods_of(objects)
    stranger = outside("default", app="curl")
    controller = outside("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"})
    assert Network([]).can_connect(stranger, pods["runtime"], 8000), "no policy: everything is allowed"
    assert Network([policies["allow-dns"]]).can_connect(stranger, pods["runtime"], 8000), "egress-only"
    assert not Network([policies["default-deny"]]).can_connect(stranger, pods["runtime"], 8000)
    without = Network([p for n, p in policies.items() if n != "ingress-controller-to-edge"])
    assert not without.can_connect(controller, pods["session-gateway"], 8000)
    without = Network([p for n, p in policies.items() if n != "parley-to-infra"])
    assert not without.can_connect(pods["runtime"], pods["nats"], 4222)


# ---- infrastructure: dev runs it like compose, production points at the charts ---------------------
def test_dev_infrastructure_matches_compose(
    rendered: dict[str, list[dict[str, Any]]], compose: dict[str, Any]
) -> None:
    objects = rendered["dev"]
    sets = of_kind(objects, "StatefulSet")
    assert set(sets) == set(INFRA_PORTS)
    for name, sts in sets.items():
        (c,) = sts["spec"]["template"]["spec"]["containers"]
        assert c["image"] == compose["services"][name]["image"], name
        assert (c.get("args") or c.get("command")) == compose["services"][name].get("command"), name
        claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert claims == {"data"} and "data" in mounts, f"{name} keeps its data on a PVC"
        compose_target = next(v.split(":")[1] for v in compose["services"][name]["volumes"])
        assert mounts["data"] == compose_target, f"{name}: the data directory compose uses"
    services = of_kind(objects, "Service")
    cfg = config(objects)
    for var, host in (("NATS_URL", "nats"), ("REDIS_URL", "redis")):
        url = urlsplit(cfg[var])
        assert url.hostname == host and url.port in {p["port"] for p in services[host]["spec"]["ports"]}
    db = urlsplit(secret_data(objects, "parley-secrets")["DATABASE_URL"])
    assert db.hostname == "postgres" and db.port == 5432
    pg = secret_data(objects, "postgres-dev")
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )
    assert "--jetstream" in sets["nats"]["spec"]["template"]["spec"]["containers"][0]["args"]


def test_production_points_at_the_documented_infrastructure(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["production"]
    infra = K8S / "overlays" / "production" / "infra"
    cfg = config(objects)
    assert cfg["PARLEY_ENVIRONMENT"] == "production"
    assert urlsplit(cfg["PARLEY_PUBLIC_URL"]).scheme == "https"
    otlp = urlsplit(cfg["PARLEY_OTLP_ENDPOINT"])
    assert otlp.scheme == "http" and otlp.port == 4318, "OTLP/HTTP"
    # NATS: the chart release `nats` in namespace `nats`, clustered with JetStream on disk.
    values = yaml.safe_load((infra / "nats-values.yaml").read_text())
    assert values["config"]["cluster"]["enabled"] is True
    replicas = values["config"]["cluster"]["replicas"]
    assert replicas >= 3 and replicas % 2 == 1, "JetStream's Raft wants an odd number of servers"
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert urlsplit(cfg["NATS_URL"]).hostname == "nats.nats.svc.cluster.local"
    # PostgreSQL: the CloudNativePG cluster's read-write Service.
    cluster = yaml.safe_load((infra / "postgres-cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster" and cluster["spec"]["instances"] >= 2
    example = (K8S / "overlays" / "production" / "secrets.env.example").read_text()
    db = urlsplit(re.search(r"^DATABASE_URL=(.+)$", example, flags=re.M).group(1))  # type: ignore[union-attr]
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert db.hostname == f"{name}-rw.{namespace}.svc.cluster.local" and db.port == 5432
    assert cluster["spec"]["bootstrap"]["initdb"]["database"] == db.path.lstrip("/")
    # The NetworkPolicy lets Parley reach exactly those (checked by evaluation above); the README
    # documents the same names.
    readme = (infra / "README.md").read_text()
    for text in ("nats.nats.svc:4222", "valkey.valkey.svc:6379", f"{name}-rw.{namespace}.svc:5432"):
        assert text in readme
    assert urlsplit(cfg["REDIS_URL"]).hostname == "valkey.valkey.svc.cluster.local"


def test_overlay_images_come_from_one_registry(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["production"]
    registries = set()
    for obj in workloads(objects).values():
        for c in obj["spec"]["template"]["spec"]["containers"]:
            registries.add(c["image"].rsplit("/", 2)[0])
    assert len(registries) == 1, registries
