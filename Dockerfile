# syntax=docker/dockerfile:1
# The wait-times worker, after astral-sh's uv multistage example: dependencies from the lock
# file in their own layer, then the project; bytecode compiled; a slim runtime of the same
# Python with only the virtual environment copied in, run as a non-root user.
#
#   docker build -t wait-times .
#   docker run --rm -e AWS_REGION=eu-west-1 wait-times          # the worker (`wait-times run`)
#   docker run --rm wait-times provision                        # any other subcommand
#
# No HEALTHCHECK here: of the image's commands only `run` serves /healthz, so the check
# belongs to what runs the worker (the `worker` service in docker-compose.yml, the task
# definition in deploy/ecs/wait-times.yaml); one-shot commands would otherwise be reported
# unhealthy. Build arguments VERSION (default: pyproject.toml's version) and SOURCE_URL
# (where the source lives; the repository records none) fill the OCI labels.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /bin/uv
# Compile bytecode at build time (the root filesystem is read-only in ECS), copy packages out
# of the cache mount instead of linking, and use the base image's interpreter only.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Runtime dependencies only: no `emulator` extra, no test or lint groups.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --no-default-groups --no-install-project --no-editable
COPY pyproject.toml uv.lock README.md ./
COPY service ./service
# --no-editable installs the project into the environment, so the source need not be copied on.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-default-groups --no-editable

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="wait-times" \
      org.opencontainers.image.description="Average wait per tenant and drink for Serverlesspresso, from its EventBridge bus" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT-0" \
      org.opencontainers.image.source="${SOURCE_URL}"
# A fixed numeric uid/gid so orchestrators (ECS `user`, Kubernetes runAsNonRoot) can check it.
RUN groupadd --system --gid 10001 wait-times \
    && useradd --system --uid 10001 --gid wait-times --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin wait-times
# Owned by root: the worker can read and run its code, never change it.
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WAIT_TIMES_LOG_FORMAT=json \
    WAIT_TIMES_METRICS_PORT=9102
WORKDIR /app
USER 10001:10001
EXPOSE 9102
# Exec form: Python is PID 1 and handles SIGTERM itself in every command: the worker drains
# (WAIT_TIMES_DRAIN_SECONDS) and exits 0, the player stops at once and exits 0, an
# interrupted `provision` exits 143 so nothing is started on a half-made stack.
STOPSIGNAL SIGTERM
ENTRYPOINT ["wait-times"]
CMD ["run"]
