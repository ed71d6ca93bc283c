"""The service kit: the plumbing every Parley service shares, written once.

- `service.ServiceKit`: broker, Redis, database, readiness (`/readyz`), `/metrics` and the health
  ping on the bus, and one lifespan that starts and stops them around a service's own parts.
- `db`: the SQLAlchemy base pieces (naming convention, type map), engine and `Database`.
- `migrations`: Alembic for a service's own schema (`migrate.py` and `migrations/env.py`).
- `runner`: the `python -m <service>` entry point (logging, tracing, uvicorn).
- `health`: readiness checks.
- `shutdown`: the lifespan's shutdown steps, each bounded in time and logged when it overruns.
- `routes`: `ContractRoute`, the route class of routers serving a published contract.

A service's `app.py` keeps only what is its own: its routers, bus handlers and workers.
"""
