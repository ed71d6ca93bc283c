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
