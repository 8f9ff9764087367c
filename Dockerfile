# hfproxy's production image: `docker compose up -d` builds it (see docs/deployment.md).
# Every dependency ships wheels (psycopg[binary], uvloop, httptools, cryptography, aiohttp…),
# so neither stage needs a compiler; the virtual environment is built apart and copied alone.
# PYTHON_IMAGE: the official image; CI builds on a stand-in made from Debian's packages instead
# (deploy/local-base.sh, docs/deployment.md).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /venv
# The versions CI tested (constraints.txt), not whatever is newest on the day of the build.
COPY requirements.txt constraints.txt /tmp/
RUN /venv/bin/pip install --only-binary=:all: -r /tmp/requirements.txt -c /tmp/constraints.txt

FROM ${PYTHON_IMAGE}
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    WEB_CONCURRENCY=2 \
    SHUTDOWN_TIMEOUT=30 \
    STATIC_ROOT=/app/staticfiles \
    USAGE_JOURNAL_DIR=/var/lib/hfproxy/usage-journal
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin hfproxy \
    && install -d -o hfproxy -g hfproxy -m 700 /var/lib/hfproxy/usage-journal
COPY --from=build /venv /venv
WORKDIR /app
COPY manage.py ./
COPY hfproxy_site ./hfproxy_site
COPY gateway ./gateway
COPY accounts ./accounts
COPY portal ./portal
COPY locale ./locale
# The admin's static files, compressed and with hashed names, served by ServeStatic.
# (DEBUG only lets the settings load without the secrets, which the build never has.)
RUN DEBUG=true ENV_FILE= python manage.py collectstatic --noinput --verbosity 0
USER hfproxy
EXPOSE 8000
# /health answers 200 while the database does; it never calls Hugging Face.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
# uvicorn with WEB_CONCURRENCY workers; on SIGTERM it drains for SHUTDOWN_TIMEOUT seconds, then
# the queued usage records are written (USAGE_SHUTDOWN_TIMEOUT) and it exits 0.
CMD ["python", "manage.py", "serve"]
