#!/usr/bin/env bash
# Installs Deque's axe-core (npm; the accessibility rules engine the console's browser tests
# run on each view) into the cache when missing.
set -euo pipefail
CACHE="${ROUTERO_CACHE:-$HOME/.cache/routero}"
version=4.14.1
dir="$CACHE/axe-core-$version"
if [ ! -f "$dir/node_modules/axe-core/axe.min.js" ]; then
  echo "setup: installing axe-core $version"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --silent "axe-core@$version"
fi
