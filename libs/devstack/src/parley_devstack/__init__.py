"""Run the whole Parley platform on one machine from PyPI wheels, and the test infrastructure.

- `parley run` (`cli`): NATS, Valkey, PostgreSQL, every service and the Caddy edge, on loopback.
- `servers`: launchers for the embedded servers.
- `edge_meta`: the edge's readiness, merged OpenAPI document and docs.
- `testing` / `pytest_plugin`: the `infra` fixture (NATS, Redis and PostgreSQL URLs for tests).
"""
