#!/usr/bin/env bash
# Installs the Cerbos PDP (npm @cerbos/cerbos-linux-x64) into the cache when missing and links
# it as $ROUTERO_CACHE/bin/cerbos, where routero up and the tests find it.
set -euo pipefail
CACHE="${ROUTERO_CACHE:-$HOME/.cache/routero}"
cerbos_version=0.55.0
cerbos_bin="$CACHE/cerbos-$cerbos_version/node_modules/@cerbos/cerbos-linux-x64/cerbos-linux-x64"
if [ ! -x "$cerbos_bin" ]; then
  echo "setup: installing Cerbos $cerbos_version"
  npm install --prefix "$CACHE/cerbos-$cerbos_version" --no-save --no-audit --no-fund --silent \
    "@cerbos/cerbos-linux-x64@$cerbos_version"
fi
mkdir -p "$CACHE/bin"
ln -sf "$cerbos_bin" "$CACHE/bin/cerbos"
