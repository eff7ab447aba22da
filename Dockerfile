# syntax=docker/dockerfile:1.7
# Sluice runtime image: every deployment in prefect.yaml (ingest-file, totesys, analytics, customers) and `sluice api`.
# Built for linux/amd64 by prefect.yaml's build step; installs exactly uv.lock's runtime set: no dependency group
# (dev tools, deploy tooling, the embedded pgserver: the tasks use Aurora), no bench extra, no packages' own tests.
# A Fargate task pulls the image at every start: keep it small (size measured in tests/deploy/test_image.py).

ARG PYTHON_VERSION=3.11

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:${PYTHON_VERSION}-slim AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/prefect/venv
WORKDIR /opt/prefect/sluice
# Dependencies first (cached while only the code changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project
COPY sluice ./sluice
COPY flows ./flows
COPY tasks ./tasks
COPY schemas ./schemas
RUN uv sync --frozen --no-default-groups --no-editable \
    && find /opt/prefect/venv/lib/python3.11/site-packages -mindepth 2 -maxdepth 3 -type d -name tests \
         -prune -exec rm -rf {} + \
    && rm -rf /opt/prefect/venv/lib/python3.11/site-packages/pyarrow/include \
    && /opt/prefect/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash sluice flows tasks schemas
# The pull step runs flows from this folder, so they import its copy of the code (not site-packages'): compiled
# here, it is not compiled again by every ECS task (0.5 s each, and 61 .pyc files written into the image's folder).

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid sluice --home-dir /opt/prefect --shell /usr/sbin/nologin sluice
# Owned by root: the runtime user reads the code and writes only /tmp (SLUICE_HOME, PREFECT_HOME).
COPY --from=build /opt/prefect /opt/prefect
ENV PATH=/opt/prefect/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SLUICE_HOME=/tmp/sluice \
    SLUICE_JSON_LOGS=true \
    PREFECT_LOGGING_SETTINGS_PATH=/opt/prefect/sluice/sluice/logging.yml \
    PREFECT_HOME=/tmp/prefect
WORKDIR /opt/prefect/sluice
USER sluice
# PID 1: forwards ECS's SIGTERM to every process of the command (the flow's own, under `prefect flow-run execute`,
# which otherwise never got it: the task was SIGKILLed and its run left Running) and reaps them (sluice/init.py).
ENTRYPOINT ["python", "-m", "sluice.init"]
# Prefect's ECS worker overrides the command with the flow run; this default serves the query API.
EXPOSE 8000
CMD ["sluice", "api", "--host", "0.0.0.0", "--port", "8000"]
