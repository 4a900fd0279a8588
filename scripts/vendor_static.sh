#!/usr/bin/env bash
# Copies the front-end libraries pinned in package.json into static/vendor/.
# Run it after changing a version in package.json, then commit package.json,
# package-lock.json and static/vendor/: pages load only these committed files (no CDN),
# so running Bourse never needs npm.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

# Install into a throwaway directory so the repo gets no node_modules/.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp package.json "$work/"
[ -f package-lock.json ] && cp package-lock.json "$work/"
(cd "$work" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error)
# Keep the lock file in the repo so the next run installs exactly the same versions.
cp "$work/package-lock.json" "$ROOT/package-lock.json"

nm="$work/node_modules"
version() { node -p "require('$nm/$1/package.json').version"; }

out="$ROOT/static/vendor"
rm -rf "$out"
mkdir -p "$out/htmx" "$out/chartjs"
cp "$nm/htmx.org/dist/htmx.min.js" "$out/htmx/htmx.min.js"
cp "$nm/htmx-ext-ws/dist/ws.min.js" "$out/htmx/ext-ws.min.js"
cp "$nm/chart.js/dist/chart.umd.min.js" "$out/chartjs/chart.umd.min.js"
# The .map files are not shipped: drop the comments that point at them, or Django's
# manifest storage (collectstatic in production) fails looking for the missing maps.
sed -i '/^\/\/# sourceMappingURL=/d' "$out"/htmx/*.js "$out"/chartjs/*.js
cp "$nm/htmx.org/LICENSE" "$out/htmx/LICENSE"
cp "$nm/chart.js/LICENSE.md" "$out/chartjs/LICENSE.md"

cat > "$out/VERSIONS.txt" <<TXT
# Written by scripts/vendor_static.sh from package.json; do not edit by hand.
htmx.org $(version htmx.org)
htmx-ext-ws $(version htmx-ext-ws)
chart.js $(version chart.js)
TXT
echo "vendored into static/vendor:"
cat "$out/VERSIONS.txt"
