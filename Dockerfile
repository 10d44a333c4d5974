# Re-linkage audit: the engine, the phantom demo and the dashboard in one image.
# Build:  docker build -t relink-audit .            (docker/smoke.sh builds, runs and checks it)
# Run:    docker run --rm -p 127.0.0.1:8501:8501 -v relink-cache:/app/cache relink-audit
#
# BASE: any Debian-like image with Python 3.11 (`python3`; `python` is not needed). Behind a
# TLS-intercepting proxy, give pip the proxy's CA bundle for the build only (never baked in):
#   DOCKER_BUILDKIT=1 docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt .
# EXTRA_INDEX_URL: optional extra package indexes (space-separated), e.g. a local wheel mirror.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba \
    RELINK_DB=/app/cache/relink.duckdb \
    PATH=/opt/venv/bin:$PATH

# A virtual environment gives `python` and `pip` on every base (Debian's own Python has only
# `python3` and refuses system-wide pip installs).
RUN python3 -m venv /opt/venv && useradd --create-home --uid 1000 audit
WORKDIR /app

COPY requirements.txt ./
ARG EXTRA_INDEX_URL=""
RUN --mount=type=secret,id=ca,required=false \
    set --; for url in $EXTRA_INDEX_URL; do set -- "$@" --extra-index-url "$url"; done; \
    if [ -s /run/secrets/ca ]; then set -- "$@" --cert /run/secrets/ca; fi; \
    pip install "$@" -r requirements.txt "setuptools>=68"

# The package itself, as `pip install .` gives it to any user (the `relink-audit` command, the
# engine, the synthetic-data package and the dashboard with their data files), built offline
# from a copy that is then removed: nothing in /app can shadow the installed package.
COPY pyproject.toml README.md requirements.txt /tmp/src/
COPY engine /tmp/src/engine
COPY synthetic /tmp/src/synthetic
COPY dashboard /tmp/src/dashboard
RUN pip install --no-deps --no-build-isolation --no-index /tmp/src && rm -rf /tmp/src

COPY .streamlit ./.streamlit
COPY cache/README.md ./cache/README.md
RUN chown -R audit:audit /app
USER audit

VOLUME ["/app/cache"]
EXPOSE 8501
# Inside the container the dashboard must listen on all of the container's interfaces to be
# reachable through a published port; publish it on the host's 127.0.0.1 only (see README).
ENV STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_PORT=8501
HEALTHCHECK --interval=10s --timeout=5s --start-period=30m \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STREAMLIT_SERVER_PORT', '8501') + '/_stcore/health')"

# The demo builds everything into the cache volume (reused on the next start), then hands its
# process over to the dashboard server (exec), so the engine's memory is released. `relink-audit`
# is the installed package's command (the same as `python -m engine` in a checkout).
CMD ["relink-audit", "demo"]
