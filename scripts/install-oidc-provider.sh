#!/usr/bin/env bash
# Installs panva's oidc-provider (npm; an OpenID-certified identity provider the single sign-on
# tests sign in through) into the cache when missing.
set -euo pipefail
"$(dirname "$0")/install-npm-package.sh" oidc-provider 9.13.3 package.json >/dev/null
