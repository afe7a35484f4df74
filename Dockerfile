# syntax=docker/dockerfile:1
# The wait-times worker, after astral-sh's uv multistage example: dependencies from the lock
# file in their own layer, then the project; bytecode compiled; a slim runtime of the same
# Python with only the virtual environment copied in, run as a non-root user.
#
#   docker build -t wait-times .
#   docker run --rm -e AWS_REGION=eu-west-1 wait-times          # the worker (`wait-times run`)
#   docker run --rm wait-times provision                        # any other subcommand

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
# The slim image has no curl: ask /healthz with the standard library (non-2xx raises, exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WAIT_TIMES_METRICS_PORT', '9102'), timeout=3)"]
# Exec form: Python is PID 1 and receives SIGTERM itself, then drains (WAIT_TIMES_DRAIN_SECONDS).
STOPSIGNAL SIGTERM
ENTRYPOINT ["wait-times"]
CMD ["run"]
