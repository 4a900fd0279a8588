#!/usr/bin/env bash
# The run command: runs the whole exchange on this machine (a fresh Debian 12 is enough).
# It creates .venv with Python 3.11 and installs requirements.txt (skipped while unchanged),
# then hands over to the process manager, scripts/bourse.py run. With no DATABASE_URL /
# REDIS_URL it starts an embedded PostgreSQL and Redis whose data stays in var/.
# Extra arguments go to the process manager, e.g. `scripts/run.sh --port 8080`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[run.sh] $*"; }

PYTHON="${PYTHON:-python3.11}"
if ! command -v "$PYTHON" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install python3.11 python3.11-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv >/dev/null
  else
    PYTHON=python3
  fi
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  # Debian's python3.11 has no ensurepip without python3.11-venv: venv would make a .venv
  # without pip, so install it first.
  if ! "$PYTHON" -c "import ensurepip" >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install python3.11-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-venv >/dev/null
  fi
  log "creating .venv with $($PYTHON --version)"
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi

# Same approach as scripts/test.sh, with its own stamp: runtime packages only.
stamp=".venv/.requirements-run.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi

exec .venv/bin/python scripts/bourse.py run "$@"
