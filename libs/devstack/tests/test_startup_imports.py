"""What a service process costs before it serves: the modules it imports, and whether they load
from bytecode. Every start (`parley run`, a worker restarted after a crash, each e2e stack) pays it
per process, and `parley run` starts eight Python processes on two cores at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

# The services that own no tables: nothing of theirs needs SQLAlchemy (~1 s of CPU to import here).
WITHOUT_A_DATABASE = (
    "parley_runtime.__main__",
    "parley_session_gateway.__main__",
    "parley_speech.__main__",
    "parley_media.__main__",
    "parley_devstack.edge_meta",
)

PROBE = """
import importlib, json, sys
found = {}
for module in sys.argv[1:]:
    importlib.import_module(module)
    found[module] = sorted(m for m in ("sqlalchemy", "alembic", "asyncpg") if m in sys.modules)
print(json.dumps(found))
"""


def test_services_without_a_database_do_not_import_sqlalchemy() -> None:
    # One after another in one interpreter: a module that pulls SQLAlchemy in shows at its own step.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *WITHOUT_A_DATABASE], capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout)
    assert found == {module: [] for module in WITHOUT_A_DATABASE}


BYTECODE_PROBE = """
import importlib, json, os, sys
site = sys.argv[1]
importlib.import_module(sys.argv[2])
missing = sorted(
    name
    for name, module in list(sys.modules.items())
    if (getattr(module, "__file__", None) or "").startswith(site)
    and (module.__file__ or "").endswith(".py")
    and not os.path.exists(getattr(module, "__cached__", None) or "")
)
print(json.dumps(missing))
"""


def test_a_service_loads_its_installed_packages_from_bytecode() -> None:
    """`make install` compiles the environment's bytecode (`uv sync --compile-bytecode`): where
    Python may not write it (PYTHONDONTWRITEBYTECODE, read-only installs), every process would
    compile every module it imports from source again, ~4 s of CPU per service instead of ~1.5."""
    site = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", BYTECODE_PROBE, site, "parley_runtime.__main__"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    missing = json.loads(out.stdout)
    assert missing == [], f"{len(missing)} modules compiled from source at start-up, e.g. {missing[:5]}"
