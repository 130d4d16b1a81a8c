# syntax=docker/dockerfile:1
# The base `fleet` image: alembic-fleet in a virtual environment, run as a non-root user.
# A platform builds its migrations image FROM this one, adding its fleet.toml and its
# services' migration folders (see examples/elevaite/Dockerfile).
#
#   docker build -t alembic-fleet:0.1.0 .
#   docker run --rm alembic-fleet:0.1.0 --help

ARG PYTHON_IMAGE=python:3.12-slim

# --- build: the wheel, then a virtual environment with it and its dependencies -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY deploy/image/build-venv.sh ./
# Every dependency ships wheels (psycopg[binary] included): no compiler needed. The venv
# gets no pip of its own; this stage's pip installs into it. The extras metrics and otel
# (prometheus-client, the OpenTelemetry SDK and OTLP/HTTP exporter): the Helm chart's
# telemetry values (Pushgateway, OTLP endpoint) work with the image as it is. Every module
# is compiled into bytecode here (see the script): the image never writes any.
RUN PYTHON=python sh build-venv.sh /opt/venv

# --- runtime: the venv only, no build tools ----------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="alembic-fleet" \
      org.opencontainers.image.description="Alembic migrations for many services and schema-per-tenant PostgreSQL tenants" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The base image's standard library comes without bytecode (its .pyc files are left out to
# keep it small), so every start of `fleet` would compile the modules it imports again:
# they are compiled once here, as the venv's are (deploy/image/build-venv.sh). Not its
# tests, nor its site-packages (pip: the venv does not see them).
RUN python3 -m compileall -q -f -j 0 --invalidation-mode checked-hash \
        -x '/(test|tests|idle_test|site-packages)/' \
        "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
 && groupadd --system --gid 10001 fleet \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin fleet \
 && mkdir /app && chown 10001:10001 /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
ENTRYPOINT ["fleet"]
CMD ["--help"]
