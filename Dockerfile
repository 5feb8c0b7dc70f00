# Production image of the Stripe gateway. Builds with the classic builder and BuildKit alike (no heredoc, no
# RUN --mount, no `syntax=` line); tests/test_dockerfile.py lints it with hadolint.
#   docker build -t stripe-gateway .
#   docker run --env-file prod.env -p 8080:8080 stripe-gateway
#
# Layout: /app/gateway, /app/sql, /app/bridge and /app/config side by side, as in the repository: the migrations
# runner reads <repo root>/sql/migrations (gateway/db/migrate.py: MIGRATIONS_DIR), the bridge schema registry is
# <repo root>/bridge/schema-registry.yaml (gateway/bridge/registry.py), and PLANS_FILE defaults to
# config/plans.yaml relative to the working directory /app (mount a ConfigMap and point PLANS_FILE at it to change
# the price -> plan mapping without rebuilding). Only the dependencies are pip-installed; the gateway itself runs
# from /app through PYTHONPATH, and /usr/local/bin/gateway is a two-line wrapper around `python -m gateway` so
# `gateway serve`, `gateway migrate` and the runbook's `gateway events ...` work in the container.
# The dependencies are installed into a virtualenv in the builder stage, which the runtime stage copies whole
# (same base image, same path): no compiler and no wheel files in the final image.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Compilers live here only, for any dependency without a binary wheel (this stage is thrown away: its Debian
# package versions need no pinning).
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
COPY pyproject.toml scripts/requirements_from_pyproject.py ./

# The runtime dependencies of pyproject.toml plus the `speed` extra (uvloop); the `embedded` extra (a PostgreSQL for
# development) is left out: production requires DATABASE_URL.
RUN python -m venv /opt/venv \
    && python requirements_from_pyproject.py speed > requirements.txt \
    && /opt/venv/bin/pip install --no-compile -r requirements.txt

# ---------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    METRICS_PORT=9102

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY gateway/ /app/gateway/
COPY sql/ /app/sql/
COPY bridge/ /app/bridge/
COPY config/ /app/config/
# Byte-compile now: the root filesystem is read-only at run time. The wrapper gives the `gateway` command.
RUN python -m compileall -q /app/gateway /opt/venv \
    && printf '#!/bin/sh\nexec python -m gateway "$@"\n' > /usr/local/bin/gateway \
    && chmod 0755 /usr/local/bin/gateway \
    && gateway --help > /dev/null

USER 10001:10001

# 8080: public API. 9102: Prometheus metrics (set METRICS_HOST=0.0.0.0 to let a scraper reach it; never publish it).
EXPOSE 8080 9102

# /health answers without the database. The Host header is the first TRUSTED_HOSTS entry (the trusted-hosts check
# would refuse 127.0.0.1 in production); a wildcard entry *.example.com becomes health.example.com.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; host = os.environ.get('TRUSTED_HOSTS', 'localhost').split(',')[0].strip().replace('*.', 'health.') or 'localhost'; req = u.Request('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), headers={'Host': host}); sys.exit(0 if u.urlopen(req, timeout=3).status == 200 else 1)"]

STOPSIGNAL SIGTERM
CMD ["gateway", "serve"]
