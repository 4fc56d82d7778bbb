#!/usr/bin/env bash
# Installs panva's oidc-provider (npm; an OpenID-certified identity provider the single sign-on
# tests sign in through) into the cache when missing.
set -euo pipefail
CACHE="${ROUTERO_CACHE:-$HOME/.cache/routero}"
version=9.13.3
dir="$CACHE/oidc-provider-$version"
if [ ! -f "$dir/node_modules/oidc-provider/package.json" ]; then
  echo "setup: installing oidc-provider $version"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --silent "oidc-provider@$version"
fi
