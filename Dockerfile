# syntax=docker/dockerfile:1
# Every relayq image, one target each. Build from the repository root:
#   docker build --target api      -t relayq/api .
#   docker build --target worker   -t relayq/worker .
#   docker build --target recovery -t relayq/recovery .
#   docker build --target operator -t relayq/operator .
# (`make images` builds all four.) Each final stage holds the Python runtime and
# one virtual environment with that service's packages only; it runs as a
# numeric non-root user and writes nothing outside /tmp, so it works with
# readOnlyRootFilesystem (the chart mounts an emptyDir at /tmp).

# Base images by exact version, never `latest` or a moving minor tag, so a build
# is repeatable and a base upgrade is a reviewed change. Where a registry is
# reachable, pin them by digest as well (docs/install.md, "Base images"):
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> ...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# -- build: the workspace sources, then one environment per service -----------------
FROM ${PYTHON_IMAGE} AS sources
COPY --from=uv /uv /usr/local/bin/uv
# Compile bytecode at build time: the running container cannot write .pyc files.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/relayq
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY services ./services
COPY operator ./operator

# The lock decides every version (--frozen); only each service's packages go in,
# installed as regular (not editable) packages so /src can go. The development
# members (relayq-dev, relayq-devchain) are never named here.
FROM sources AS build-api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-default-groups --no-editable \
        --package relayq-api --package relayq-relayer --package relayq-cli

FROM sources AS build-worker
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-default-groups --no-editable \
        --package relayq-worker --package relayq-relayer --package relayq-cli --package relayq-signer

FROM sources AS build-recovery
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-default-groups --no-editable \
        --package relayq-recovery --package relayq-cli

FROM sources AS build-operator
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-default-groups --no-editable \
        --package relayq-operator

# -- runtime: what every final stage shares ------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/relayq/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp

FROM runtime AS api
COPY --from=build-api /opt/relayq /opt/relayq
ENV RELAYQ_API_HOST=0.0.0.0 \
    RELAYQ_API_PORT=8080 \
    RELAYQ_API_METRICS_PORT=9100
# 8080: the API, /healthz and /readyz (RELAYQ_API_PORT); 9100: Prometheus metrics
# (RELAYQ_API_METRICS_PORT), kept off the public port.
EXPOSE 8080 9100
ENTRYPOINT ["relayq", "api"]

FROM runtime AS worker
COPY --from=build-worker /opt/relayq /opt/relayq
ENV RELAYQ_METRICS_PORT=9100
# 9100: Prometheus metrics (RELAYQ_METRICS_PORT).
EXPOSE 9100
# The priority comes from the command line: `docker run relayq/worker --priority high`.
ENTRYPOINT ["relayq", "worker"]
CMD ["--priority", "medium"]

FROM runtime AS recovery
COPY --from=build-recovery /opt/relayq /opt/relayq
# No port: a pass is a short batch run, not a server.
ENTRYPOINT ["relayq", "recovery"]

FROM runtime AS operator
COPY --from=build-operator /opt/relayq /opt/relayq
# 8080: liveness (/healthz); 9100: Prometheus metrics.
EXPOSE 8080 9100
ENTRYPOINT ["relayq-operator"]
