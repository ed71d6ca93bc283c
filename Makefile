# Parley: two commands for a fresh machine with Python 3.11+ and make.
#   make run   installs everything with uv and starts the whole platform on the embedded stack
#   make test  installs everything and runs every test
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Use uv from PATH if present, otherwise bootstrap it into .tools/ with the system Python.
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PYTHON ?= python3
# Tests that shell out to uv (tests/deploy) find the bootstrapped one too.
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: help install run test lint typecheck bench clean

help:
	@echo "make run   - install and start Parley on http://127.0.0.1:$${PARLEY_PORT:-8080}"
	@echo "             (PARLEY_TRACES=1 make run: with a local trace viewer at /traces)"
	@echo "make test  - install and run the whole test suite"
	@echo "make lint  - ruff and mypy"
	@echo "make bench - run the benchmarks in bench/"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

# Bytecode is compiled at install (the packages', then Parley's own sources): where Python may not
# write it (PYTHONDONTWRITEBYTECODE, a read-only checkout) every process would compile each module
# it imports from source again at every start, ~4 s of CPU per service instead of ~1.5.
install: $(if $(filter .tools/bin/uv,$(UV)),.tools/bin/uv)
	$(UV) sync --all-packages --frozen --compile-bytecode
	$(UV) run --frozen --no-sync python -m compileall -q -j 0 libs services bench tests > /dev/null

run: install
	$(UV) run --frozen parley run $(if $(PARLEY_TRACES),--traces)

# The suite runs a test module per process, PYTEST_WORKERS at a time (default 2: most e2e time is
# spent waiting on sockets and subprocesses, so two share two cores well). Modules marked `serial`
# (schemathesis: many items under one node id, which pytest-xdist would run once) run after, each in
# a pytest of its own, two at once (each keeps one core busy); their output follows, module by
# module. On shared servers (NATS_URL set) one at a time: both would answer in the `auth` group.
SERIAL_MODULES = grep -rl --include='test_*.py' '^pytestmark = pytest.mark.serial' services libs tests
test: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy
	$(UV) run --frozen pytest -n $${PYTEST_WORKERS:-2} --dist loadfile -m "not serial"
	@rm -rf test-artifacts/serial && mkdir -p test-artifacts/serial
	$(SERIAL_MODULES) | xargs -P $$([ -n "$${NATS_URL:-}" ] && echo 1 || echo 2) -I{} \
	  sh -c '$(UV) run --frozen pytest -m serial {} > test-artifacts/serial/$$(echo {} | tr / _).log 2>&1'; \
	  rc=$$?; cat test-artifacts/serial/*.log; exit $$rc

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

bench: install
	$(UV) run --frozen python -m bench

clean:
	rm -rf .parley .tools .venv
