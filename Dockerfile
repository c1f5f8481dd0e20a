# syntax=docker/dockerfile:1
#
# forewarn worker image: `docker run IMAGE` runs `forewarn worker`; any other
# forewarn command works as the argument (`docker run IMAGE rules check`).
# Written from the python image's documentation; not built on the development
# machine (it has no Docker engine). See docs/production.md.
#
# Layout:
#   /app          the project, read-only for the runtime user
#   /data/state   working directory; faust keeps its table data (RocksDB) in
#                 ./<FOREWARN_APP_ID>-data here -> mount a volume on /data/state
#   /data/outbox  FOREWARN_OUTBOX, the offline channel's files -> mount a volume
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --gid 10001 forewarn \
 && useradd --uid 10001 --gid forewarn --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin forewarn

WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams/ streams/
COPY templates/ templates/
COPY schemas/ schemas/
COPY config/ config/

# Editable install (-e) on purpose: streams/settings.py finds config/, templates/
# and schemas/ next to the imported `streams` package (ROOT = its parent), and
# the outbox channel loads schemas from there too. A plain `pip install .` would
# import `streams` from site-packages, where those folders are not. -e keeps
# /app as the one copy of the code; the `forewarn` console script is installed
# as usual. The rocksdb extra brings rocksdict for FOREWARN_STORE=rocksdb://.
# (x86-64 has wheels for every dependency; on arm64 faust-streaming builds from
# its sdist and falls back to pure Python without a compiler.)
RUN pip install -e ".[rocksdb]" \
 && python -m compileall -q /app/streams \
 && mkdir -p /data/state /data/outbox \
 && chown -R forewarn:forewarn /data

ENV FOREWARN_OUTBOX=/data/outbox \
    FOREWARN_METRICS_PORT=9108 \
    FOREWARN_METRICS_ADDRESS=0.0.0.0

WORKDIR /data/state
USER forewarn

# Prometheus metrics (only HTTP the worker serves).
EXPOSE 9108

# The metrics server starts with the worker; a refused connection means the
# worker is not (yet) running. Fails by design when FOREWARN_METRICS_PORT=0.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FOREWARN_METRICS_PORT', '9108') + '/metrics', timeout=4)"]

ENTRYPOINT ["forewarn"]
CMD ["worker"]
