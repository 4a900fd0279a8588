#!/usr/bin/env bash
# The run command: runs the whole exchange on this machine (a fresh Debian 12 is enough).
# It creates .venv with Python 3.11 and installs requirements.txt (skipped while unchanged),
# then hands over to the process manager, scripts/bourse.py run. With no DATABASE_URL /
# REDIS_URL it starts an embedded PostgreSQL and Redis whose data stays in var/.
# Extra arguments go to the process manager, e.g. `scripts/run.sh --port 8080`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_venv requirements.txt .requirements-run.sha256 requirements.txt

exec .venv/bin/python scripts/bourse.py run "$@"
