#!/usr/bin/env bash
# Installs the Cerbos PDP (npm @cerbos/cerbos-linux-x64) into the cache when missing and links
# it as $ROUTERO_CACHE/bin/cerbos, where routero up and the tests find it.
set -euo pipefail
CACHE="${ROUTERO_CACHE:-$HOME/.cache/routero}"
cerbos_bin=$("$(dirname "$0")/install-npm-package.sh" @cerbos/cerbos-linux-x64 0.55.0 cerbos-linux-x64)
mkdir -p "$CACHE/bin"
ln -sf "$cerbos_bin" "$CACHE/bin/cerbos"
