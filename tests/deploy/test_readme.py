"""Every command the README shows works on a fresh machine after `make install` (or `make run`) alone.

A fresh machine has Python 3.11+, make and curl (the README says so) and a POSIX shell with its
usual utilities, nothing else: no uv on PATH (make bootstraps its own into `.tools/`, which is not
on the user's PATH), no `python` besides `python3`. So each program a README command calls must be
one of those, a shell builtin, or a program the installation put into the checkout (`.venv/bin/…`).
The shell commands are the fenced `bash` blocks and the inline code spans that start with a
program; the Docker Compose and Kubernetes section is for a Docker host or a cluster and is left
out. tests/e2e/test_devstack.py runs the first-conversation example against a real `parley run`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import bashlex
import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
# What the README's "On a fresh machine with ..." sentence promises, and nothing more.
PREREQUISITES = {"python3", "make", "curl"}
POSIX_UTILITIES = {"cat", "cp", "mkdir", "mv", "rm", "ls", "tee", "grep", "sed", "head", "tail", "env"}
OTHER_MACHINES = "## Docker Compose and Kubernetes"
_PROGRAM = re.compile(r"^(?:[a-z][\w.+-]*|\.{0,2}/\S+|\.venv/\S+)$")


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) for each `## ` section; the part before the first one has heading ""."""
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    return [("", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]


def fenced_shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, flags=re.M | re.S)


def inline_commands(text: str) -> list[str]:
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    commands = []
    for span in re.findall(r"`([^`\n]+)`", prose):
        words = [w for w in span.split() if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
        if " " in span and words and _PROGRAM.match(words[0]):
            commands.append(span)
    return commands


def programs(script: str) -> list[str]:
    """The program of every simple command in `script`, including inside `$(…)` and pipelines."""
    found: list[str] = []

    class Visitor(bashlex.ast.nodevisitor):  # type: ignore[misc]
        def visitcommand(self, node: object, parts: list[object]) -> None:
            words = [p for p in parts if getattr(p, "kind", None) == "word"]
            if words:
                found.append(str(words[0].word))  # type: ignore[attr-defined]

    for tree in bashlex.parse(script):
        Visitor().visit(tree)
    return found


def fresh_path() -> str:
    """This machine's PATH as a new user's would be: no directory holding a `uv` (the lead's
    /usr/local/bin/uv symlink, ~/.local/bin, ...), nothing inside the checkout."""
    keep = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(entry)
        if not entry or (path / "uv").exists() or path.resolve().is_relative_to(REPO):
            continue
        keep.append(entry)
    return os.pathsep.join(keep)


def kind(program: str, path: str) -> str:
    """bash's `type -t`: builtin, keyword, file, ... or "" when it is not found."""
    result = subprocess.run(
        ["bash", "-c", 'type -t -- "$1"', "_", program],
        env={"PATH": path},
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.stdout.strip()


def readme_commands() -> list[str]:
    commands: list[str] = []
    for heading, body in sections(README.read_text()):
        if heading != OTHER_MACHINES:
            commands += fenced_shell_blocks(body) + inline_commands(body)
    return commands


def test_the_readme_names_what_a_fresh_machine_needs() -> None:
    text = README.read_text()
    (sentence,) = re.findall(r"On a fresh machine with ([^:]*):", text)
    assert "Python 3.11+" in sentence and "make" in sentence and "curl" in sentence, sentence


def test_extraction_finds_the_commands() -> None:
    """The extraction is not vacuous: it sees the README's commands, and an HTTP request line or
    a prose span is not taken for one."""
    commands = readme_commands()
    assert "make run" in commands and "rm -rf .parley" in commands
    assert any("docs/examples/realtime_client.py" in c for c in commands)
    called = {p for c in commands for p in programs(c)}
    assert {"make", "curl", "python3", ".venv/bin/python"} <= called
    assert inline_commands("`GET /readyz` and `session.<id>.in`, `PARLEY_PORT=1 make run`") == [
        "PARLEY_PORT=1 make run"
    ]
    assert programs('X=$(curl -s u | python3 -c "x") && uv run y') == ["curl", "python3", "uv"]


@pytest.mark.parametrize("command", readme_commands(), ids=lambda c: c.splitlines()[0][:50])
def test_each_readme_command_runs_after_make_install(command: str) -> None:
    path = fresh_path()
    assert subprocess.run(["bash", "-n"], input=command, text=True, capture_output=True).returncode == 0, (
        f"not valid shell:\n{command}"
    )
    for program in programs(command):
        if "/" in program:
            installed = REPO / program
            assert installed.is_file() and os.access(installed, os.X_OK), f"{program} not installed by make"
            continue
        found = kind(program, path)
        if found in ("builtin", "keyword"):
            continue
        assert program in PREREQUISITES | POSIX_UTILITIES, (
            f"{program!r} is not on a fresh machine (after make install, use .venv/bin/{program})"
        )
        assert found == "file", f"{program} is not on PATH here"
    if command.split()[0] == "make" or " make " in f" {command} ":
        target = command.split("make", 1)[1].split()[0]
        result = subprocess.run(
            ["make", "-n", "-C", str(REPO), target],
            env={**os.environ, "PATH": path},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


def test_fresh_path_has_no_uv() -> None:
    assert kind("uv", fresh_path()) == ""
    assert kind("python3", fresh_path()) == "file"
