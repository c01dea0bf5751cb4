# syntax=docker/dockerfile:1
# ysync: the server (`ysync serve`, the default command) and the compaction worker
# (`ysync-worker`, give it as the command). Build from the repository root:
#     docker build -t ysync .
#     docker run -p 3002:3002 ysync                      # embedded Redis, data in the container
#     docker run -e REDIS=redis://redis:6379 -e POSTGRES=postgres://... ysync
#     docker run -e REDIS=... -e POSTGRES=... ysync ysync-worker    # or: ysync-worker --once
# Configuration comes from the environment only (README, config.toml); nothing secret is in
# the image. docs/deploy.md: compose, Kubernetes, load balancers.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the wheels of ysync and of everything it needs -----------------------------------
FROM ${PYTHON_IMAGE} AS build
# setup.py compiles ysync/updates with mypyc: a C compiler (the image has Python's headers)
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ysync ./ysync
COPY workers ./workers
# the ysync wheel and those of its dependencies (with the postgres, gcs and s3 storages)
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres,gcs,s3]'
# the codec must be compiled: setup.py would fall back to pure Python quietly (a few times
# slower), so install once here and stop the build if it did
RUN python -m venv /opt/ysync \
    && /opt/ysync/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        'ysync[postgres,gcs,s3]' \
    && /opt/ysync/bin/python -c 'import sys, ysync.updates; sys.exit(not ysync.updates.COMPILED)'

# --- runtime: the interpreter and the installed package, nothing else ------------------------
FROM ${PYTHON_IMAGE} AS runtime
# a fixed numeric uid/gid: Kubernetes' runAsNonRoot can check it (deploy/k8s)
RUN groupadd --system --gid 10001 ysync \
    && useradd --system --uid 10001 --gid ysync --home-dir /var/lib/ysync --create-home \
        --shell /usr/sbin/nologin ysync
COPY --from=build /opt/ysync /opt/ysync
ENV PATH=/opt/ysync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    YSYNC_SERVER_HOST=0.0.0.0
USER 10001:10001
# no config.toml here: the defaults and the environment (or a mounted file named by
# YSYNC_CONFIG). The port stays the default 3002 unless PORT or YSYNC_SERVER_PORT says otherwise
# (Cloud Run sets PORT). The embedded default (no REDIS) keeps its data in ./ysync-data here.
WORKDIR /var/lib/ysync
EXPOSE 3002
# the server's GET /healthz (200 while Redis answers). A worker container serves /healthz on
# worker.metrics_port instead: override this check there (deploy/compose.yaml does).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('YSYNC_SERVER_PORT') or os.environ.get('PORT') or '3002'), timeout=4)"]
# SIGTERM (docker stop, Kubernetes) drains: /readyz fails, clients are closed with 1012 over
# server.drain_period, then the server waits up to server.shutdown_timeout. Give `docker stop`
# more time than both: docker stop -t 30 (compose: stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["ysync", "serve"]
