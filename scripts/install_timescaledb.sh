#!/usr/bin/env bash
# Builds TimescaleDB (Apache-licensed part) from Debian trixie's source package against the
# local PostgreSQL 15, enables it, and restarts PostgreSQL. Skips every step already done,
# so it is cheap to call from .ci/run on every run.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PG_CONF="/etc/postgresql/${PG_MAJOR}/main/postgresql.conf"
PG_LIBDIR="$(/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/${PG_MAJOR}/lib)"
WORK="${TIMESCALEDB_BUILD_DIR:-/var/cache/bourse-timescaledb}"

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

if ! ls "$PG_LIBDIR"/timescaledb-*.so >/dev/null 2>&1; then
  log "building from trixie source"
  apt_install postgresql-server-dev-"$PG_MAJOR" cmake libssl-dev dpkg-dev build-essential
  mkdir -p "$WORK/lists/partial" "$WORK/src"
  # The mirror the machine already uses, taken from its own apt sources.
  mirror="$( { grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
              grep -hE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                | sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } | grep -v security | head -n1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  echo "deb-src ${mirror%/} trixie main" > "$WORK/trixie-src.list"
  aptopts=(-o "Dir::Etc::SourceList=$WORK/trixie-src.list" -o Dir::Etc::SourceParts=/dev/null
           -o "Dir::State::Lists=$WORK/lists")
  apt-get "${aptopts[@]}" update -qq
  (cd "$WORK/src" && apt-get "${aptopts[@]}" source --download-only timescaledb >/dev/null)
  tarball="$(ls "$WORK"/src/timescaledb_*.orig.tar.* | head -n1)"
  rm -rf "$WORK/build-src" && mkdir -p "$WORK/build-src"
  tar -xf "$tarball" -C "$WORK/build-src" --strip-components=1
  (cd "$WORK/build-src" && \
     PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH" ./bootstrap -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF \
       -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DSEND_TELEMETRY_DEFAULT=OFF \
       -DPG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" >/dev/null && \
     make -C build -j"$(nproc)" install >/dev/null)
  log "installed $(ls "$PG_LIBDIR"/timescaledb-*.so | head -n1)"
else
  log "already built"
fi

restart=0
if ! grep -qE "^\s*shared_preload_libraries\s*=.*timescaledb" "$PG_CONF"; then
  log "adding timescaledb to shared_preload_libraries"
  printf "\n# added by bourse scripts/install_timescaledb.sh\nshared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n" >> "$PG_CONF"
  restart=1
fi

if [ $restart -eq 1 ]; then
  pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main restart
elif ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main start || true
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
pg_isready -h 127.0.0.1 -p 5432
