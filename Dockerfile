# syntax=docker/dockerfile:1
# One image recipe for every Parley service; PACKAGE names the service's directory under services/
# (its package is parley_<PACKAGE>). The build context is the repository root (the uv workspace):
#   docker build --build-arg PACKAGE=auth -t parley/auth .
#   docker build --build-arg PACKAGE=session_gateway -t parley/session-gateway .
# (auth, catalog, session_gateway, runtime, speech, media). docker-compose.yml builds each with its PACKAGE;
# tests/deploy/test_dockerfiles.py replays the builder stage for each without a Docker engine.
# deploy/migrate/Dockerfile (two packages, no HTTP) and libs/devstack/Dockerfile (edge-meta, with
# docs/errors.md) keep the same shape for the two images that are not one service.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: install this member's locked dependencies into /app/.venv ------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
ARG PACKAGE
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Every workspace member's pyproject.toml, so uv sees the same workspace the lockfile describes.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/
COPY libs/devstack/pyproject.toml libs/devstack/
COPY services/auth/pyproject.toml services/auth/
COPY services/catalog/pyproject.toml services/catalog/
COPY services/session_gateway/pyproject.toml services/session_gateway/
COPY services/runtime/pyproject.toml services/runtime/
COPY services/speech/pyproject.toml services/speech/
COPY services/media/pyproject.toml services/media/
# Third-party dependencies only: this layer is rebuilt only when the lockfile changes.
RUN uv sync --frozen --no-dev --no-install-workspace --package parley-${PACKAGE}
# Then our own code, installed (editable) from the same paths the runtime stage uses.
COPY libs/common libs/common
COPY services/${PACKAGE} services/${PACKAGE}
RUN uv sync --frozen --no-dev --package parley-${PACKAGE} \
 && python -m compileall -q libs/common/src services/${PACKAGE}/src

# ---- runtime: slim image, the venv and our sources, non-root ------------------------------------
FROM ${PYTHON_IMAGE}
ARG PACKAGE
RUN groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid parley --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin parley
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY --from=builder /app/libs/common /app/libs/common
COPY --from=builder /app/services/${PACKAGE} /app/services/${PACKAGE}
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PARLEY_HTTP_HOST=0.0.0.0 \
    PARLEY_HTTP_PORT=8000 \
    PARLEY_MODULE=parley_${PACKAGE}
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('PARLEY_HTTP_PORT', '8000') + '/readyz', timeout=3)"]
# `exec`: Python replaces the shell, so SIGTERM reaches it (uvicorn drains, workers hand sessions back).
CMD ["sh", "-c", "exec python -m \"$PARLEY_MODULE\""]
