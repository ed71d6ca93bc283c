"""Published npm packages for e2e tests: installed once per version into a cache directory.

A test that needs one is skipped only when node/npm are missing or the registry is unreachable;
any other install failure fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CACHE_ROOT = Path(tempfile.gettempdir()) / "parley-test-cache"
UNREACHABLE = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET", "ENETUNREACH")


def npm_install(package: str, version: str) -> Path:
    """The directory holding `node_modules/<package>` (installed from the registry if needed)."""
    prefix = CACHE_ROOT / f"{package.replace('/', '-').lstrip('@')}-{version}"
    if (prefix / "node_modules" / package / "package.json").exists():
        return prefix
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip(f"npm/node are not installed: cannot install {package}")
    prefix.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--prefix", str(prefix), f"{package}@{version}", "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        if any(code in done.stderr for code in UNREACHABLE):
            pytest.skip(f"the npm registry is unreachable: {done.stderr.strip()[-300:]}")
        raise AssertionError(f"npm install {package}@{version} failed ({done.returncode}):\n{done.stderr}")
    assert (prefix / "node_modules" / package / "package.json").exists(), f"npm did not install {package}"
    return prefix
