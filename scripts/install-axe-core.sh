#!/usr/bin/env bash
# Installs Deque's axe-core (npm; the accessibility rules engine the console's browser tests
# run on each view) into the cache when missing.
set -euo pipefail
"$(dirname "$0")/install-npm-package.sh" axe-core 4.14.1 axe.min.js >/dev/null
