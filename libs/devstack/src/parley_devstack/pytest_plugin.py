"""pytest plugin: the session-scoped `infra` fixture (NATS, Redis, a fresh PostgreSQL database).

Loaded for every pytest run through the `pytest11` entry point of parley-devstack, and also listed
in the root `tests/conftest.py`; see `parley_devstack.testing` for where the servers come from.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parley_devstack import testing


@pytest.fixture(scope="session")
def infra() -> Iterator[testing.Infra]:
    with testing.infra() as value:
        yield value


# The modules that take longest (each starts whole stacks, a browser or speech models), longest
# first, then the rest of their folders. `make test` runs modules on two workers in collection
# order (`--no-loadscope-reorder`: pytest-xdist would otherwise order them by their number of
# tests, which leaves the one-test modules, some of the longest, for the end, with one worker
# idle while the other finishes them). Longest first keeps both busy to the end. Only the order
# depends on this list; a module missing from it runs later, nothing more.
SLOW_FIRST = (
    "tests/e2e/test_webrtc_media.py",
    "tests/e2e/test_credential_logs.py",
    "tests/e2e/test_voice.py",
    "tests/e2e/test_octavus_cli.py",
    "tests/e2e/test_faults_nats.py",
    "tests/e2e/test_revocation.py",
    "tests/e2e/test_playground_browser.py",
    "tests/e2e/test_faults_redis.py",
    "tests/bench/test_voice_engines_smoke.py",
    "tests/e2e/",
    "tests/bench/",
    "services/speech/",
)


def _slowness_rank(item: pytest.Item, root: str) -> int:
    path = str(item.path)
    path = path[len(root) :].lstrip("/") if path.startswith(root) else path
    return next((i for i, prefix in enumerate(SLOW_FIRST) if path.startswith(prefix)), len(SLOW_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = str(config.rootpath)
    items.sort(key=lambda item: _slowness_rank(item, root))  # stable: the order within a module stays
