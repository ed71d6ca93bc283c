"""The published `@octavus/cli@2.0.0` (from the npm registry, unchanged) against `parley run`.

`octavus validate` and `octavus sync` on an agent folder, with a Parley API key made through the
edge: validate passes, sync creates the agent (visible through the Octavus and the Kivox API),
a changed prompt syncs as an update of the same agent, a broken protocol fails validate and sync
with our issue printed. Skipped only when npm/node are missing or the registry is unreachable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley_devstack.servers import free_port

from .npm import npm_install

CLI_VERSION = "2.0.0"
CORPUS = Path(__file__).parents[2] / "libs/common/tests/octavus_corpus/valid/cli-readme"
START_TIMEOUT_S = 150.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the CLI colours its output whatever NO_COLOR says


def octavus_cli() -> Path:
    """The CLI's bin, installed once into the cache directory."""
    binary = npm_install("@octavus/cli", CLI_VERSION) / "node_modules" / ".bin" / "octavus"
    assert binary.exists(), f"npm install did not create {binary}"
    return binary


class ParleyRun:
    """`parley run` (what `make run` starts) as a subprocess in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = workdir / "parley.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "REDIS_URL", "DATABASE_URL"}}
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "parley_devstack", "run", "--port", str(self.port)],
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._readyz() != 200:
            if self.proc.poll() is not None:
                raise AssertionError(f"parley run exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"parley run not ready within {START_TIMEOUT_S:.0f}s:\n{self.output()}")
            time.sleep(0.2)

    def _readyz(self) -> int:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def parley() -> Iterator[ParleyRun]:
    # Not tmp_path: as root, PostgreSQL runs as another user that must traverse every parent
    # directory, and pytest resets its `pytest-of-<user>` base directory to 0700.
    workdir = Path(tempfile.mkdtemp(prefix="parley-octavus-"))
    workdir.chmod(0o755)
    run = ParleyRun(workdir)
    try:
        run.start()
        yield run
    finally:
        run.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def account(url: str) -> tuple[httpx.Client, str]:
    """A new account through the edge: its session (cookie) and an API key for the CLI."""
    session = httpx.Client(base_url=url, timeout=30)
    email = f"octavus-{time.monotonic_ns()}@example.com"
    signup = session.post(
        "/auth/signup", json={"email": email, "password": "correct horse battery", "name": "o"}
    )
    assert signup.status_code == 201, signup.text
    key = session.post(
        "/auth/api-keys", json={"name": "octavus cli", "scopes": ["agents:read", "agents:write"]}
    )
    assert key.status_code == 201, key.text
    return session, str(key.json()["key"])


class Octavus:
    """Runs the CLI from an empty directory (it loads `.env` from its working directory)."""

    def __init__(self, binary: Path, url: str, key: str, cwd: Path) -> None:
        self.binary, self.cwd = binary, cwd
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OCTAVUS_")},
            "OCTAVUS_API_URL": url,
            "OCTAVUS_CLI_API_KEY": key,
        }

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            cwd=self.cwd,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def json(self, *args: str) -> dict[str, Any]:
        done = self.run(*args, "--json")
        assert done.returncode == 0, (
            f"octavus {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        data: dict[str, Any] = json.loads(done.stdout)
        return data


def test_octavus_validate_and_sync_against_parley_run(parley: ParleyRun) -> None:
    binary = octavus_cli()
    served = httpx.get(f"{parley.url}/api/agents", timeout=30)
    assert served.status_code == 401, (
        f"GET /api/agents answered {served.status_code} {served.text}: the catalog must include "
        "parley_catalog.octavus.router (build_app) and the edge route /api/agents* to it"
    )
    session, key = account(parley.url)
    api = httpx.Client(base_url=parley.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    agent_dir = parley.workdir / "agents" / "support-chat"
    shutil.copytree(CORPUS, agent_dir)
    cwd = parley.workdir / "cli"
    cwd.mkdir()
    octavus = Octavus(binary, parley.url, key, cwd)

    assert octavus.json("validate", str(agent_dir)) == {
        "slug": "support-chat",
        "valid": True,
        "errors": [],
        "warnings": [],
    }
    plain = octavus.run("validate", str(agent_dir))
    assert plain.returncode == 0 and "support-chat" in plain.stdout, plain

    created = octavus.json("sync", str(agent_dir))
    assert created["slug"] == "support-chat" and created["created"] is True
    agent_id = created["agentId"]
    listed = api.get("/api/agents").json()["agents"]
    assert [(a["id"], a["slug"], a["name"]) for a in listed] == [(agent_id, "support-chat", "Support Chat")]
    kivox = session.get(f"/agents/{agent_id}")
    assert kivox.status_code == 200, kivox.text
    assert kivox.json()["config"]["name"] == "Support Chat"
    assert octavus.json("get", "support-chat")["id"] == agent_id

    system = agent_dir / "prompts" / "system.md"
    system.write_text(system.read_text() + "\nAlways answer in one sentence.\n")
    updated = octavus.json("sync", str(agent_dir))
    assert updated == {"slug": "support-chat", "agentId": agent_id, "created": False}
    assert len(api.get("/api/agents").json()["agents"]) == 1
    prompts = {p["name"]: p["content"] for p in api.get(f"/api/agents/{agent_id}").json()["prompts"]}
    assert prompts["system"].endswith("Always answer in one sentence.\n")

    protocol = agent_dir / "protocol.yaml"
    protocol.write_text(protocol.read_text().replace("system: system", "system: missing-prompt"))
    broken = octavus.run("validate", str(agent_dir))
    assert broken.returncode == 1, broken
    printed = ANSI.sub("", broken.stdout + broken.stderr)
    assert "missing-prompt" in printed and "(agent.system)" in printed, printed
    refused = octavus.run("sync", str(agent_dir))
    assert refused.returncode == 1, refused
    # Our `error` key is what the CLI prints (not "Request failed with status 422").
    assert "missing-prompt" in ANSI.sub("", refused.stdout + refused.stderr), refused
    after = {p["name"]: p["content"] for p in api.get(f"/api/agents/{agent_id}").json()["prompts"]}
    assert after == prompts

    without_key = {k: v for k, v in octavus.env.items() if k != "OCTAVUS_CLI_API_KEY"}
    no_key = octavus.run("validate", str(agent_dir), env=without_key)
    assert no_key.returncode == 2, no_key
