# Shared by scripts/run.sh and scripts/test.sh (sourced, not run).

log() { echo "[$(basename "$0")] $*"; }

apt_updated=0
# Install Debian packages that are missing (root only); a no-op when all are present.
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ensure_venv REQUIREMENTS_FILE STAMP_NAME [FILES_HASHED...]
# Creates .venv with Python 3.11 (installing Debian's python3.11 and python3.11-venv when
# needed) and installs the requirements, skipped while the hashed files are unchanged.
ensure_venv() {
  local requirements="$1" stamp=".venv/$2"
  shift 2
  local python="${PYTHON:-python3.11}"
  if ! command -v "$python" >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt_install python3.11 python3.11-venv
    else
      python=python3
    fi
  fi
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    # Debian's python3.11 has no ensurepip without python3.11-venv: venv would make a .venv
    # without pip, so install it first.
    if ! "$python" -c "import ensurepip" >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt_install python3.11-venv
    fi
    log "creating .venv with $("$python" --version)"
    rm -rf .venv
    "$python" -m venv .venv
  fi
  local want
  want="$(cat "$@" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python packages from $requirements"
    .venv/bin/pip install -q --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
  fi
}
