"""docker-compose.yml: valid against the compose-spec schema and the real compose client (where one is
installed), consistent with the Dockerfiles, the Caddyfile and the workspace. No Docker engine needed."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from tests.deploy.conftest import expand, image_key

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "deploy" / "schemas" / "compose-spec.json"
# deploy/schemas/README.md says where the file comes from; a new copy is a deliberate change.
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

INFRA = {"nats", "redis", "postgres"}
# Parley's long-running services and the module each one runs.
PARLEY_SERVICES = {
    "auth": "parley_auth",
    "catalog": "parley_catalog",
    "session-gateway": "parley_session_gateway",
    "runtime": "parley_runtime",
    "speech": "parley_speech",
    "media": "parley_media",
    "edge-meta": "parley_devstack.edge_meta",
}
EXPECTED_SERVICES = INFRA | {"migrate", "edge"} | set(PARLEY_SERVICES)
# Started only with `--profile observability` (deploy/observability, tests in test_observability.py).
OBSERVABILITY = {"otel-collector", "tempo", "prometheus", "grafana"}
SHARED_ENV = {
    "NATS_URL",
    "REDIS_URL",
    "DATABASE_URL",
    "PARLEY_PUBLIC_URL",
    "PARLEY_AUTH_TOKEN_SECRET",
    "PARLEY_CATALOG_SECRET_KEY",
    "PARLEY_OTLP_ENDPOINT",
    "PARLEY_LOG_JSON",
}
# Dummy values for the variables compose requires (`${VAR:?...}`).
REQUIRED_VARS = {"PARLEY_AUTH_TOKEN_SECRET": "test-secret", "PARLEY_CATALOG_SECRET_KEY": "test-key"}


def interpolate_defaults(value: str) -> str:
    """Resolve `${VAR:-default}` / `${VAR-default}` to the default, `${VAR:?msg}` to a placeholder."""
    value = re.sub(r"\$\{[A-Z0-9_]+:?-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{([A-Z0-9_]+):?\?[^}]*\}", r"<\1>", value)


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def has_healthcheck(name: str, service: dict[str, Any], dockerfiles: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and check.get("test") not in (["NONE"], "NONE")
    build = service.get("build")
    if build:
        final = dockerfiles[image_key(build["dockerfile"], build.get("args"))].final
        checks = final.all("HEALTHCHECK")
        return bool(checks) and checks[-1].value[0] != "NONE"
    return False


# ---- (a) compose-spec JSON schema ---------------------------------------------------------------
@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_vendored_schema_is_the_documented_one() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA_SHA256 in (SCHEMA.parent / "README.md").read_text()


def test_compose_file_matches_compose_spec(compose: dict[str, Any], validator: Any) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        (("services", "auth"), "restrat", "always"),  # unknown key
        (("services", "runtime", "deploy"), "replicas", {"count": 2}),  # wrong type
        (("services", "auth", "depends_on", "migrate"), "condition", "service_finished"),  # bad enum
    ],
)
def test_schema_check_is_not_vacuous(
    compose: dict[str, Any], validator: Any, where: tuple[str, ...], key: str, value: Any
) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for part in where:
        node = node[part]
    node[key] = value
    assert list(validator.iter_errors(broken)), f"schema accepted {where}.{key}={value!r}"


# ---- (b) the real compose client -----------------------------------------------------------------
def _compose_clients() -> list[Any]:
    clients = []
    for argv in (["docker-compose"], ["docker", "compose"]):
        reason = None
        if shutil.which(argv[0]) is None:
            reason = f"`{argv[0]}` is not on PATH"
        elif len(argv) > 1:
            probe = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=60)
            if probe.returncode != 0:
                said = ((probe.stderr or probe.stdout).strip().splitlines() or ["no output"])[0][:80]
                reason = f"`{' '.join(argv)}` is not available: {said}"
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        clients.append(pytest.param(argv, marks=marks, id=" ".join(argv)))
    return clients


def _run_config(
    argv: list[str], tmp_path: Path, extra_env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "empty.env"  # ignore a developer's .env
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "POSTGRES_", "COMPOSE_"))}
    env.update(extra_env)
    files = [
        "--project-directory",
        str(REPO),
        "-f",
        str(REPO / "docker-compose.yml"),
        "--env-file",
        str(env_file),
    ]
    return subprocess.run(
        [*argv, *files, "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


@pytest.mark.parametrize("argv", _compose_clients())
def test_compose_client_accepts_the_file(argv: list[str], tmp_path: Path) -> None:
    result = _run_config(argv, tmp_path, REQUIRED_VARS)
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("argv", _compose_clients())
def test_compose_client_refuses_to_run_without_secrets(argv: list[str], tmp_path: Path) -> None:
    result = _run_config(argv, tmp_path, {})
    assert result.returncode != 0
    assert "PARLEY_AUTH_TOKEN_SECRET" in result.stderr + result.stdout


# ---- (c) consistency ------------------------------------------------------------------------------
def test_topology(compose: dict[str, Any]) -> None:
    svc = services(compose)
    assert set(svc) == EXPECTED_SERVICES | OBSERVABILITY
    profiled = {name for name, s in svc.items() if s.get("profiles")}
    assert profiled == OBSERVABILITY, "the platform itself starts without any profile"
    assert all(svc[name]["profiles"] == ["observability"] for name in OBSERVABILITY)
    for name in EXPECTED_SERVICES:
        assert not set(depends_on(svc[name])) & OBSERVABILITY, f"{name} must not need the optional profile"
    assert svc["runtime"]["deploy"]["replicas"] == 2
    assert svc["nats"]["image"].split(":")[0] == "nats"
    assert "--jetstream" in svc["nats"]["command"] or "-js" in svc["nats"]["command"]
    assert svc["redis"]["image"].split(":")[0] in {"redis", "valkey/valkey"}
    assert svc["postgres"]["image"].split(":")[0] == "postgres"
    assert svc["edge"]["image"].split(":")[0] == "caddy"
    for name in INFRA:
        assert svc[name].get("volumes"), f"{name} keeps its data in a volume"
        assert svc[name].get("healthcheck"), f"{name} has a healthcheck others can wait on"


def test_only_the_edge_publishes_a_port(compose: dict[str, Any]) -> None:
    """The edge is the one public port. Grafana and Prometheus (observability profile) publish on the
    host's loopback only: operators' tools, not part of the public origin."""
    published = {name: s["ports"] for name, s in services(compose).items() if s.get("ports")}
    public = {name: ports for name, ports in published.items() if name not in OBSERVABILITY}
    assert public == {"edge": ["${PARLEY_PORT:-8080}:8080"]}
    for name in published.keys() - public.keys():
        for port in published[name]:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port} on loopback only"


def test_postgres_volume_matches_the_image_layout(compose: dict[str, Any]) -> None:
    postgres = services(compose)["postgres"]
    major = int(re.match(r"postgres:(\d+)", postgres["image"]).group(1))  # type: ignore[union-attr]
    targets = [v.split(":")[1] for v in postgres["volumes"]]
    # 18+ images keep PGDATA under /var/lib/postgresql/<major>/docker; a volume on .../data is lost.
    expected = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    assert targets == [expected]


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    used = {
        v.split(":")[0]
        for s in services(compose).values()
        for v in s.get("volumes", [])
        if isinstance(v, str) and not v.startswith((".", "/"))
    }
    assert used == set(compose.get("volumes", {}))


def test_depends_on_is_satisfiable(compose: dict[str, Any], dockerfiles: dict[str, Any]) -> None:
    svc = services(compose)
    for name, service in svc.items():
        for dep, condition in depends_on(service).items():
            assert dep in svc, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                assert has_healthcheck(dep, svc[dep], dockerfiles), f"{name} waits for {dep} to be healthy"
            if condition == "service_completed_successfully":
                assert svc[dep].get("restart", "no") == "no", f"{dep} is a one-shot"
    assert depends_on(svc["migrate"]) == {"postgres": "service_healthy"}
    for name in ("auth", "catalog"):
        assert depends_on(svc[name])["migrate"] == "service_completed_successfully"
        assert depends_on(svc[name])["postgres"] == "service_healthy"
    for name in PARLEY_SERVICES.keys() - {"edge-meta"}:
        assert depends_on(svc[name])["nats"] == "service_healthy"
        assert depends_on(svc[name])["redis"] == "service_healthy"
    assert set(depends_on(svc["edge"])) == set(PARLEY_SERVICES)


def test_parley_services_are_built_restart_and_report_readiness(compose: dict[str, Any]) -> None:
    svc = services(compose)
    for name in PARLEY_SERVICES:
        service = svc[name]
        assert service["restart"] in {"unless-stopped", "always", "on-failure"}
        assert "ports" not in service
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        path = "/healthz" if name == "edge-meta" else "/readyz"
        assert f"'{path}'" in test[3], f"{name} healthcheck hits {path}"
    assert svc["migrate"]["restart"] == "no"


def test_builds_point_to_existing_dockerfiles(compose: dict[str, Any], dockerfiles: dict[str, Any]) -> None:
    built = {}
    for name, service in services(compose).items():
        if "build" not in service:
            continue
        build = service["build"]
        assert (REPO / build["context"]).resolve() == REPO, f"{name} builds from the workspace root"
        assert (REPO / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} does not exist"
        assert service["image"].startswith(f"parley/{name}:"), f"{name} tags its image parley/{name}"
        built[name] = image_key(build["dockerfile"], build.get("args"))
    assert set(built) == set(PARLEY_SERVICES) | {"migrate"}
    assert set(built.values()) == set(dockerfiles), "every image is built by some compose service"


def test_read_only_services_write_only_to_tmpfs(compose: dict[str, Any]) -> None:
    """With a read-only root, every directory a service is told to write to is on its tmpfs."""
    for name, service in services(compose).items():
        if not service.get("read_only"):
            continue
        writable = service.get("tmpfs", [])
        for var, value in service.get("environment", {}).items():
            if var.endswith("_DIR"):
                assert any(value.startswith(t.rstrip("/") + "/") for t in writable), f"{name}: {var}"
    assert services(compose)["auth"]["environment"]["PARLEY_AUTH_MAIL_DIR"].startswith("/tmp/")


def test_compose_runs_the_module_its_dockerfile_runs(
    compose: dict[str, Any], dockerfiles: dict[str, Any]
) -> None:
    for name, module in PARLEY_SERVICES.items():
        service = compose["services"][name]
        build = service["build"]
        df = dockerfiles[image_key(build["dockerfile"], build.get("args"))]
        cmd = expand(" ".join(df.final.all("CMD")[-1].value), df.final.env()).replace('"', "")
        assert re.findall(r"python -m ([\w.]+)", cmd) == [module], name
        assert "command" not in service and "entrypoint" not in service, f"{name} runs the image's CMD"
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == list(dockerfiles[migrate["build"]["dockerfile"]].final.all("CMD")[-1].value)


def test_migrate_runs_both_migrations_in_order(compose: dict[str, Any], workspace: Any) -> None:
    command = compose["services"]["migrate"]["command"]
    modules = re.findall(r"python -m ([\w.]+)", " ".join(command))
    assert modules == ["parley_auth.migrate", "parley_catalog.migrate"]
    assert " && " in command[-1], "catalog migrates only after auth succeeded"
    for module in modules:
        workspace.member_of_module(module)  # the package exists


def test_shared_environment(compose: dict[str, Any]) -> None:
    svc = services(compose)
    assert set(compose["x-parley-env"]) >= SHARED_ENV
    for name in PARLEY_SERVICES.keys() - {"edge-meta"} | {"migrate"}:
        env = svc[name]["environment"]
        assert set(env) >= SHARED_ENV, f"{name} misses {SHARED_ENV - set(env)}"
        assert env["PARLEY_HTTP_HOST"] == "0.0.0.0" and str(env["PARLEY_HTTP_PORT"]) == "8000"
        assert "${PARLEY_AUTH_TOKEN_SECRET:?" in env["PARLEY_AUTH_TOKEN_SECRET"], "no default secret"
        assert "${PARLEY_CATALOG_SECRET_KEY:?" in env["PARLEY_CATALOG_SECRET_KEY"], "no default secret"
        # Every infrastructure URL names a compose service on its real port.
        for var, (host, port) in {
            "NATS_URL": ("nats", 4222),
            "REDIS_URL": ("redis", 6379),
            "DATABASE_URL": ("postgres", 5432),
        }.items():
            url = urlsplit(interpolate_defaults(env[var]))
            assert (url.hostname, url.port) == (host, port), f"{name}: {var}"
        assert urlsplit(interpolate_defaults(env["DATABASE_URL"])).scheme == "postgresql"


def test_the_go_servers_run_on_one_processor_unless_told(compose: dict[str, Any]) -> None:
    """nats-server and Caddy share the machine's cores with the services, as under `parley run`:
    one Go processor each unless PARLEY_GO_MAXPROCS says otherwise (docs/operations.md)."""
    svc = services(compose)
    for name in ("nats", "edge"):
        value = svc[name]["environment"]["GOMAXPROCS"]
        assert value == "${PARLEY_GO_MAXPROCS:-1}" and interpolate_defaults(value) == "1", name


def test_nats_keeps_the_heap_goal_of_parley_run(compose: dict[str, Any]) -> None:
    """nats-server's Go heap may grow to 1.5 times its live data, as under `parley run`
    (parley_devstack.servers.NATS_GOGC); the edge keeps Go's default."""
    from parley_devstack.servers import NATS_GOGC

    svc = services(compose)
    assert svc["nats"]["environment"]["GOGC"] == NATS_GOGC
    assert "GOGC" not in svc["edge"]["environment"]


def test_database_credentials_match_postgres(compose: dict[str, Any]) -> None:
    svc = services(compose)
    pg = {k: interpolate_defaults(v) for k, v in svc["postgres"]["environment"].items()}
    url = urlsplit(interpolate_defaults(svc["auth"]["environment"]["DATABASE_URL"]))
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )


def test_edge_meta_peers_are_compose_services(compose: dict[str, Any]) -> None:
    svc = services(compose)
    peers = dict(p.split("=", 1) for p in svc["edge-meta"]["environment"]["PARLEY_EDGE_PEERS"].split(","))
    assert set(peers) == {"auth", "catalog", "session_gateway", "runtime", "speech", "media"}
    for peer, url in peers.items():
        parts = urlsplit(url)
        assert parts.hostname == peer.replace("_", "-") and parts.hostname in svc and parts.port == 8000


def test_caddyfile_upstreams_are_compose_services(compose: dict[str, Any]) -> None:
    caddyfile = (REPO / "deploy" / "caddy" / "Caddyfile").read_text()
    upstreams = set(re.findall(r"^\s*reverse_proxy\s+([^\s{]+)", caddyfile, flags=re.M))
    assert upstreams == {f"{name}:8000" for name in ("auth", "catalog", "session-gateway", "edge-meta")}
    svc = services(compose)
    for upstream in upstreams:
        host = upstream.split(":")[0]
        assert host in svc and "build" in svc[host], f"Caddy proxies to {host}, which compose must run"
    edge = svc["edge"]
    assert "./deploy/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in edge["volumes"]
    assert re.search(r"^:8080\s*\{", caddyfile, flags=re.M), "the site listens on the published port"


def test_healthcheck_one_liners_work(compose: dict[str, Any], fake_servers: Any) -> None:
    """Run each compose healthcheck against a local server: exit 0 on 200, non-zero on 503."""
    server = fake_servers("svc")
    svc = services(compose)
    for name in PARLEY_SERVICES:
        _, python, *args = svc[name]["healthcheck"]["test"]
        assert python == "python"
        path = "/healthz" if name == "edge-meta" else "/readyz"
        env = {**os.environ, "PARLEY_HTTP_PORT": str(server.port)}
        for status, ok in ((200, True), (503, False)):
            server.status[path] = status
            result = subprocess.run([sys.executable, *args], env=env, capture_output=True, timeout=30)
            assert (result.returncode == 0) is ok, f"{name} healthcheck with {status}: {result.stderr!r}"


# ---- (d) Caddy accepts the edge config ------------------------------------------------------------
def test_caddy_validates_the_caddyfile(caddy: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [caddy, "validate", "--config", str(REPO / "deploy/caddy/Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_caddyfile_is_formatted(caddy: str) -> None:
    path = REPO / "deploy/caddy/Caddyfile"
    result = subprocess.run([caddy, "fmt", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == path.read_text(), "run `caddy fmt --overwrite deploy/caddy/Caddyfile`"


def test_env_example_lists_every_variable_compose_reads() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    listed = set(re.findall(r"^([A-Z0-9_]+)=", (REPO / ".env.example").read_text(), flags=re.M))
    assert used - listed == set(), "document these in .env.example"
    required = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+):\?", text))
    assert required == set(REQUIRED_VARS)
