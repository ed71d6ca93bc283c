"""The Dockerfiles, read with BuildKit's own parser (the `dockerfile` package), checked against the uv
workspace and .dockerignore, and their builder stage replayed with `uv sync --dry-run` (no engine)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.deploy.conftest import SERVICE_DOCKERFILE, SERVICE_PACKAGES, expand, image_key

REPO = Path(__file__).resolve().parents[2]
UID = 10001


def cmd_modules(df: Any) -> list[str]:
    """Modules the image runs with `python -m` (exec form, or inside `sh -c` with the image's ENV
    expanded as the container's shell expands it)."""
    cmd = df.final.all("CMD")
    assert cmd, f"{df.path}: no CMD"
    assert cmd[-1].json, f"{df.path}: CMD must be exec form (JSON) so signals reach Python"
    if cmd[-1].value[:2] == ("sh", "-c"):
        script = cmd[-1].value[2]
        assert script.startswith("exec ") or "&&" in script, f"{df.key}: `exec` so Python gets SIGTERM"
    line = expand(" ".join(cmd[-1].value), df.final.env()).replace('"', "")
    return re.findall(r"python -m ([\w.]+)", line)


def synced_packages(step: list[str]) -> list[str]:
    """The `--package` names of a `uv sync`, normalised as uv normalises them (`_` is `-`)."""
    return [step[i + 1].replace("_", "-") for i, arg in enumerate(step) if arg == "--package"]


def test_each_dockerfile_parses_into_builder_and_runtime(dockerfiles: dict[str, Any]) -> None:
    assert set(dockerfiles) == {
        *(image_key(SERVICE_DOCKERFILE, {"PACKAGE": p}) for p in SERVICE_PACKAGES),
        "libs/devstack/Dockerfile",
        "deploy/migrate/Dockerfile",
    }
    assert {"auth", "catalog", "session_gateway", "runtime", "speech"} <= set(SERVICE_PACKAGES)
    for df in dockerfiles.values():
        assert [s.name for s in df.stages] == ["builder", None], df.path
        assert all(s.base == "${PYTHON_IMAGE}" for s in df.stages), f"{df.path}: both stages on one image"


def test_dockerfiles_share_base_image_and_uv_version(dockerfiles: dict[str, Any]) -> None:
    images = {df.global_args.get("PYTHON_IMAGE") for df in dockerfiles.values()}
    assert len(images) == 1
    (image,) = images
    assert image is not None and re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", image)
    uv_versions = {df.stage("builder").args().get("UV_VERSION") for df in dockerfiles.values()}
    assert len(uv_versions) == 1
    (uv_version,) = uv_versions
    assert uv_version and re.fullmatch(r"\d+\.\d+\.\d+", uv_version), "pin an exact uv version"


def test_runtime_stage_is_non_root(dockerfiles: dict[str, Any]) -> None:
    for df in dockerfiles.values():
        users = df.final.all("USER")
        assert users, f"{df.path}: no USER in the final stage"
        user = users[-1].value[0]
        # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
        assert user == f"{UID}:{UID}", f"{df.path}: USER {user}"
        last_user = max(c.start_line for c in users)
        assert all(c.start_line < last_user for c in df.final.all("RUN")), f"{df.path}: RUN after USER"
        assert any(f"--uid {UID}" in " ".join(c.value) for c in df.final.all("RUN")), "user is created"


def test_cmd_module_is_a_workspace_package(dockerfiles: dict[str, Any], workspace: Any) -> None:
    for df in dockerfiles.values():
        modules = cmd_modules(df)
        assert modules, f"{df.path}: CMD runs no `python -m` module"
        installed = set()
        for step in df.stage("builder").uv_syncs():
            installed |= set(synced_packages(step))
        for module in modules:
            member = workspace.member_of_module(module)  # fails if no package dir provides it
            assert member.name in installed, f"{df.path}: runs {module} but syncs {sorted(installed)}"


def test_cmd_modules_are_written(dockerfiles: dict[str, Any], workspace: Any) -> None:
    """Every module an image runs exists and can be run with `python -m`."""
    missing = sorted({m for df in dockerfiles.values() for m in cmd_modules(df) if not workspace.runnable(m)})
    assert missing == []


def test_service_image_runs_its_own_package(dockerfiles: dict[str, Any], workspace: Any) -> None:
    for package in SERVICE_PACKAGES:
        df = dockerfiles[image_key(SERVICE_DOCKERFILE, {"PACKAGE": package})]
        member = next(m for m in workspace.members.values() if m.path == f"services/{package}")
        assert cmd_modules(df) == [member.modules[0]], f"{df.key} runs `python -m {member.modules[0]}`"
        assert synced_packages(df.stage("builder").uv_syncs()[-1]) == [member.name], df.key


def test_service_dockerfile_declares_package_in_each_stage(dockerfiles: dict[str, Any]) -> None:
    """A build arg is visible in a stage only where the stage declares it: nothing is left unexpanded."""
    for package in SERVICE_PACKAGES:
        df = dockerfiles[image_key(SERVICE_DOCKERFILE, {"PACKAGE": package})]
        for stage in df.stages:
            assert "PACKAGE" in stage.args(), f"{df.key}: stage {stage.name} declares ARG PACKAGE"
            for command in stage.commands:
                if command.cmd in ("COPY", "RUN", "ENV"):
                    assert "PACKAGE" not in " ".join(command.value), f"{df.key}: {command.original}"


def test_builder_syncs_frozen_without_dev_in_two_layers(dockerfiles: dict[str, Any], workspace: Any) -> None:
    for df in dockerfiles.values():
        builder = df.stage("builder")
        deps_only, full = builder.uv_syncs()
        for step in (deps_only, full):
            assert "--frozen" in step and "--no-dev" in step, f"{df.path}: {' '.join(step)}"
            assert all(p in workspace.members for p in synced_packages(step)), f"{df.path}: unknown package"
        assert "--no-install-workspace" in deps_only and "--no-install-workspace" not in full
        assert synced_packages(deps_only) == synced_packages(full)
        env = builder.env()
        assert env.get("UV_PROJECT_ENVIRONMENT") == "/app/.venv"
        assert env.get("UV_PYTHON_DOWNLOADS") == "never", "use the image's Python, never a downloaded one"


# Plain data files an image serves, copied straight from the context into the final stage.
DATA_FILES = {"libs/devstack/Dockerfile": [("docs/errors.md", "/app/docs/errors.md")]}


def test_copies_match_the_workspace(dockerfiles: dict[str, Any], workspace: Any) -> None:
    all_pyprojects = {f"{m.path}/pyproject.toml" for m in workspace.members.values()}
    for df in dockerfiles.values():
        builder = df.stage("builder")
        packages = synced_packages(builder.uv_syncs()[-1])
        needed_dirs = {workspace.members[name].path for name in workspace.closure(packages)}
        context_sources = {
            src for origin, sources, _ in builder.copies() if origin is None for src in sources
        }
        # Every member's pyproject (uv reads the whole workspace), the lock, and the source of every
        # member the image installs, workspace dependencies included.
        assert {"pyproject.toml", "uv.lock"} | all_pyprojects <= context_sources, df.path
        copied_dirs = {s for s in context_sources if (REPO / s).is_dir()}
        assert copied_dirs == needed_dirs, (
            f"{df.path}: copies {sorted(copied_dirs)}, needs {sorted(needed_dirs)}"
        )
        # The runtime stage takes the venv and exactly those sources from the builder, at the same paths
        # (the editable installs point there).
        final = {(o, tuple(s), d) for o, s, d in df.final.copies()}
        expected: set[tuple[str | None, tuple[str, ...], str]] = {("builder", ("/app/.venv",), "/app/.venv")}
        expected |= {("builder", (f"/app/{d}",), f"/app/{d}") for d in needed_dirs}
        expected |= {(None, (src,), dest) for src, dest in DATA_FILES.get(df.path, ())}
        assert final == expected, df.path


def test_copied_paths_exist_and_are_not_dockerignored(
    dockerfiles: dict[str, Any], dockerignored: Any
) -> None:
    for df in dockerfiles.values():
        for origin, sources, _ in df.stage("builder").copies():
            if origin is not None:
                continue
            for src in sources:
                path = REPO / src
                assert path.exists(), f"{df.path}: COPY {src}: no such path in the build context"
                assert not dockerignored(src), f"{df.path}: COPY {src} is excluded by .dockerignore"
                if path.is_dir():  # what the image runs must survive .dockerignore too
                    for inner in ("pyproject.toml", "src"):
                        assert not dockerignored(f"{src}/{inner}"), (
                            f"{df.path}: {src}/{inner} is dockerignored"
                        )


def test_dockerignore_keeps_secrets_and_local_state_out(dockerignored: Any) -> None:
    for path in (".git", ".venv", "services/auth/.venv", ".parley", ".env", "node_modules", "x/node_modules"):
        assert dockerignored(path), f"{path} must not reach the build context"
    for path in ("libs/common/src/parley_common/__pycache__", ".mypy_cache", "libs/common/.pytest_cache"):
        assert dockerignored(path), path
    for path in ("pyproject.toml", "uv.lock", "libs/common/src/parley_common/settings.py"):
        assert not dockerignored(path), path


def test_http_images_expose_8000_with_a_readiness_healthcheck(dockerfiles: dict[str, Any]) -> None:
    for df in dockerfiles.values():
        final = df.final
        checks = final.all("HEALTHCHECK")
        assert len(checks) == 1, f"{df.path}: one HEALTHCHECK (or HEALTHCHECK NONE)"
        if df.path == "deploy/migrate/Dockerfile":
            assert checks[0].value == ("NONE",) and not final.all("EXPOSE")
            continue
        assert [c.value for c in final.all("EXPOSE")] == [("8000",)], df.path
        env = final.env()
        assert (env.get("PARLEY_HTTP_HOST"), env.get("PARLEY_HTTP_PORT")) == ("0.0.0.0", "8000"), df.path
        assert checks[0].json and checks[0].value[:3] == ("CMD", "python", "-c"), df.path
        path = "/healthz" if df.path == "libs/devstack/Dockerfile" else "/readyz"
        assert f"'{path}'" in checks[0].value[3], f"{df.path}: HEALTHCHECK on {path}"
        assert env.get("PATH", "").strip('"').startswith("/app/.venv/bin:"), f"{df.path}: venv first on PATH"


def test_dockerfile_healthchecks_work(dockerfiles: dict[str, Any], fake_servers: Any) -> None:
    server = fake_servers("svc")
    env = {**os.environ, "PARLEY_HTTP_PORT": str(server.port)}
    for df in dockerfiles.values():
        check = df.final.all("HEALTHCHECK")[0]
        if check.value == ("NONE",):
            continue
        _, _, *args = check.value
        path = "/healthz" if "'/healthz'" in args[-1] else "/readyz"
        for status, ok in ((200, True), (503, False)):
            server.status[path] = status
            result = subprocess.run([sys.executable, *args], env=env, capture_output=True, timeout=30)
            assert (result.returncode == 0) is ok, f"{df.path} HEALTHCHECK on {status}: {result.stderr!r}"


def _replay_copy(sources: list[str], dest: str, workdir: Path, dockerignored: Any) -> None:
    """COPY from the build context, with Docker's rules: a directory's contents go into the destination,
    a destination ending in / is a directory, and .dockerignore'd files are not in the context."""
    target = workdir / dest
    for src in sources:
        path = REPO / src
        if path.is_dir():
            for file in path.rglob("*"):
                rel = file.relative_to(REPO).as_posix()
                if file.is_file() and not dockerignored(rel):
                    out = target / file.relative_to(path)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, out)
        else:
            out = target / path.name if dest.endswith("/") or len(sources) > 1 else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_builder_stage_replays_with_uv(
    dockerfiles: dict[str, Any], workspace: Any, dockerignored: Any, tmp_path: Path
) -> None:
    """Replay each builder stage outside Docker, instruction by instruction: COPY lays files out in a
    scratch /app, and each `uv sync` line runs with `--dry-run --offline` against exactly those files.
    The lockfile must answer, and each layer must install what it claims."""
    for df in dockerfiles.values():
        builder = df.stage("builder")
        workdir = tmp_path / re.sub(r"\W", "_", df.key)
        workdir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
        env.update({k: v.strip('"') for k, v in builder.env().items()})
        env.update(
            UV_PROJECT_ENVIRONMENT=str(workdir / ".venv"),
            UV_PYTHON=sys.executable,
            UV_OFFLINE="1",
            UV_NO_PROGRESS="1",
        )
        synced = 0
        for command in builder.commands:
            if command.cmd == "WORKDIR":
                assert command.value == ("/app",), f"{df.path}: the venv and sources live in /app"
            elif command.cmd == "COPY":
                assert not command.flags, f"{df.path}: builder COPY comes from the context"
                *sources, dest = command.value
                _replay_copy(sources, dest, workdir, dockerignored)
            elif command.cmd == "RUN":
                for step in run_steps(command):
                    if step[:2] != ["uv", "sync"]:
                        continue
                    synced += 1
                    result = subprocess.run(
                        [*step, "--dry-run"],
                        cwd=workdir,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )
                    assert result.returncode == 0, f"{df.path}: {' '.join(step)}\n{result.stderr}"
                    would_install = set(
                        re.findall(r"^ \+ (parley-[\w-]+)(?:==| @ )", result.stderr, flags=re.M)
                    )
                    if "--no-install-workspace" in step:
                        assert would_install == set(), f"{df.path}: the first layer installs no member"
                    else:
                        assert would_install == workspace.closure(synced_packages(step)), df.path
                        for name in would_install:  # editable installs need their sources in place
                            member = workspace.members[name]
                            for module in member.modules:
                                src = workdir / member.path / "src" / module
                                assert src.is_dir(), f"{df.path}: {name} installed without {src}"
        assert synced == 2, df.path


def run_steps(command: Any) -> list[list[str]]:
    return [shlex.split(part) for part in " ".join(command.value).split("&&")]
