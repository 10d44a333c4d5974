# Re-linkage audit: the engine, the phantom demo and the dashboard in one image.
# Build:  docker build -t relink-audit .
# Run:    docker run --rm -p 8501:8501 -v relink-cache:/app/cache relink-audit
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    RELINK_DB=/app/cache/relink.duckdb

RUN useradd --create-home --uid 1000 audit
WORKDIR /app

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY engine ./engine
COPY dashboard ./dashboard
COPY .streamlit ./.streamlit
COPY cache/README.md ./cache/README.md
COPY pyproject.toml README.md ./
RUN chown -R audit:audit /app
USER audit

VOLUME ["/app/cache"]
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health')"

# The demo builds everything into the cache volume (reused on the next start), then serves the
# dashboard; inside the container it must listen on all interfaces to be reachable.
CMD ["sh", "-c", "python -m engine demo --no-serve && python -m streamlit run dashboard/app.py --server.address 0.0.0.0 --server.port 8501"]
