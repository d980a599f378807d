# DistCache images: one file, two product targets (and a test client). Build from the repository
# root (the context needs pyproject.toml, node/ and operator/; .dockerignore keeps the rest out):
#
#   docker build --target node -t distcache/node .
#   docker build --target operator --build-arg EXTRAS='[operator]' -t distcache/operator .
#   docker build --target client -t distcache/client .   # e2e only: the node's venv + redis-py
#   docker run --rm -p 8080:8080 -e DISTCACHE_API_KEY=... distcache/node
#
# `make images` (scripts/images.sh) does both on a machine that cannot pull images: it imports a
# debootstrapped Debian bookworm as the base (`--build-arg PYTHON_IMAGE=distcache/python-base:...`;
# any Debian-like image with python3 >= 3.11, python3-venv and useradd works) and adds
# `--build-arg PIP_FIND_LINKS=/wheels` with host-built wheels in .build/wheels when containers
# cannot reach PyPI. scripts/docker-build-local.sh --smoke runs the node image as a user would.
#
# Both images run as uid/gid 10001, write nothing outside /tmp (readOnlyRootFilesystem: true
# works with an emptyDir on /tmp) and have no HEALTHCHECK: Kubernetes probes them.
# No `# syntax=` line on purpose: it would make BuildKit pull a frontend image before building.

# Every stage uses the same base image, so the venv's interpreter link stays valid.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project and its dependencies into a venv ------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# python3, not python or a fixed path: Debian's own python3 has no `python` alias.
RUN python3 -m venv /opt/distcache
WORKDIR /src
COPY pyproject.toml ./
COPY node ./node
COPY operator ./operator
# Optional offline install: wheels built on the host into .build/wheels (the only part of .build
# the context keeps). Without any, the glob matches nothing and only pyproject.toml is copied.
COPY pyproject.toml .build/wheels/*.whl /wheels/
# '' for the node (no kopf in its image), '[operator]' for the operator.
ARG EXTRAS=
ARG PIP_FIND_LINKS=
# Dependencies all ship manylinux wheels: no compiler in this stage. pip compiles the .pyc
# files here, so the read-only runtime never needs to write any.
RUN if [ -n "$PIP_FIND_LINKS" ]; then \
        /opt/distcache/bin/pip install --no-index --find-links "$PIP_FIND_LINKS" "distcache$EXTRAS"; \
    else \
        /opt/distcache/bin/pip install --upgrade pip \
     && /opt/distcache/bin/pip install ".$EXTRAS"; \
    fi \
 && /opt/distcache/bin/distcache-node --help > /dev/null \
 && if [ -n "$EXTRAS" ]; then /opt/distcache/bin/python -c 'import kopf, distcache_operator'; fi

# --- runtime: the venv only, as a non-root user ----------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 distcache \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin distcache
COPY --from=build /opt/distcache /opt/distcache
ENV PATH=/opt/distcache/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080

# --- node: the cache node ---------------------------------------------------------------------
FROM runtime AS node
LABEL org.opencontainers.image.title="distcache-node" \
      org.opencontainers.image.description="DistCache cache node (HTTP JSON in-memory cache)" \
      org.opencontainers.image.licenses="Apache-2.0"
# Listen on every interface inside the container (the node's own default is loopback);
# DISTCACHE_* variables are the node's settings, and flags given as container args win.
ENV DISTCACHE_HOST=0.0.0.0 \
    DISTCACHE_PORT=8080
# Exec form: the node is PID 1 and gets SIGTERM itself, finishing in-flight requests.
ENTRYPOINT ["distcache-node"]

# --- operator: kopf, built with EXTRAS='[operator]' --------------------------------------------
FROM runtime AS operator
LABEL org.opencontainers.image.title="distcache-operator" \
      org.opencontainers.image.description="DistCache Kubernetes operator (kopf)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["python3", "-m", "distcache_operator"]

# --- client: the node's venv plus redis-py, for the e2e tier's Redis-protocol load pod -----------
# (e2e/test_resp_kind.py; scripts/images.sh client). A test image, not shipped: the node image
# stays without a Redis client. Offline, the redis wheel comes from .build/wheels like the rest.
FROM build AS client-build
ARG PIP_FIND_LINKS=
ARG CLIENT_REQUIREMENT="redis>=5"
RUN if [ -n "$PIP_FIND_LINKS" ]; then \
        /opt/distcache/bin/pip install --no-index --find-links "$PIP_FIND_LINKS" "$CLIENT_REQUIREMENT"; \
    else \
        /opt/distcache/bin/pip install "$CLIENT_REQUIREMENT"; \
    fi \
 && /opt/distcache/bin/python -c 'import redis, hiredis'

FROM runtime AS client
LABEL org.opencontainers.image.title="distcache-client" \
      org.opencontainers.image.description="DistCache e2e load client (the node's venv and redis-py)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=client-build /opt/distcache /opt/distcache
ENTRYPOINT ["python3"]
