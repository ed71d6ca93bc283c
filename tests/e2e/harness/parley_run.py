"""`parley run` (what `make run` starts) as a subprocess for a test module, in a directory of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from parley_devstack.servers import free_port

START_TIMEOUT_S = 120


@contextmanager
def parley_run(prefix: str, args: Sequence[str], env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """Start `parley run --port <free> *args` with the environment `env` added to this one (without
    the test infra's URLs or LLM settings); yield the edge's URL and the working directory once
    `/readyz` answers 200; stop it with Ctrl-C (then SIGKILL) and remove the directory."""
    # Not tmp_path: as root, PostgreSQL runs as another user that must traverse every parent.
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"NATS_URL", "REDIS_URL", "DATABASE_URL"} and not k.startswith("PARLEY_LLM_")
    }
    full_env.update(env)
    out = (workdir / "parley.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley_devstack", "run", "--port", str(port), *args],
        cwd=workdir,
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (workdir / "parley.out").read_text(errors="replace")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "parley run did not get ready"
            time.sleep(0.3)
        yield url, workdir
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        out.close()
        shutil.rmtree(workdir, ignore_errors=True)
