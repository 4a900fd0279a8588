#!/usr/bin/env bash
# The test command: installs what the suite needs on a fresh Debian 12 machine (Python
# packages, Redis, PostgreSQL 15 with TimescaleDB, Chromium), makes sure both servers are
# up, then runs pytest against them. Steps already done are skipped. Extra arguments go
# to pytest, e.g. `scripts/test.sh accounts -k withdrawal`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# --- Python ------------------------------------------------------------------------------
ensure_venv requirements-dev.txt .requirements.sha256 requirements.txt requirements-dev.txt

# --- Redis -------------------------------------------------------------------------------
if ! command -v redis-server >/dev/null; then apt_install redis-server; fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# --- PostgreSQL 15 + TimescaleDB ---------------------------------------------------------
if [ ! -d /etc/postgresql/15/main ]; then apt_install postgresql-15 postgresql-client-15; fi
bash scripts/install_timescaledb.sh
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc "select 1" >/dev/null 2>&1; then
  # A stock Debian cluster asks for passwords over TCP; the test server trusts loopback.
  log "allowing trust auth on loopback for the test server"
  hba=/etc/postgresql/15/main/pg_hba.conf
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect 15 main reload
fi

# --- Chromium for the browser tests ------------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi

# --- Lint and types (STYLE.md 10): ruff everywhere, mypy --strict on the engine core --------
log "ruff and mypy"
.venv/bin/ruff check --quiet .
.venv/bin/mypy --no-error-summary

# --- Run ---------------------------------------------------------------------------------
export DJANGO_SETTINGS_MODULE=exchange_site.settings.test
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/bourse}"
export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/11}"
unset BOURSE_VAR_DIR
# A temp dir of its own per database: pytest keeps only its three newest runs under
# /tmp/pytest-of-<user>, so two runs side by side would delete each other's files
# (an embedded PostgreSQL's data directory among them).
basetemp="${TMPDIR:-/tmp}/bourse-pytest-$(printf '%s %s' "$DATABASE_URL" "$REDIS_URL" | sha1sum | cut -c1-10)"
log "pytest against $DATABASE_URL and $REDIS_URL"
set +e
.venv/bin/python -m pytest --create-db --basetemp="$basetemp" "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  log "pytest collected no tests"
  rc=0
fi
exit $rc
