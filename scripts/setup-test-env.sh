#!/usr/bin/env bash
# Installs and starts what the build and the tests need, when missing. Safe to run repeatedly.
#   - Debian packages: what the build needs (scripts/install-build-deps.sh), PostgreSQL (server
#     and psql), openssl (test certificates), xmlsec1 (the SAML identity provider of the tests),
#     prometheus (a real Prometheus and promtool scraping and checking the metrics), sslscan
#     (what the HTTPS listeners offer) and stunnel4 (a TLS front with client certificates for
#     the Kafka broker), chromium and chromium-driver (the console's browser tests)
#   - cargo-nextest and cargo-deny, from crates.io
#   - PostgreSQL on 127.0.0.1:5432 with trust auth, and Redis on 127.0.0.1:6379, started if not
#     reachable
#   - the Cerbos PDP binary (npm @cerbos/cerbos-linux-x64), linked as $CACHE/bin/cerbos
#   - panva oidc-provider (npm), the identity provider single sign-on is tested against
#   - Deque axe-core (npm), the accessibility checks the console's browser tests run
#   - a Python virtualenv with the e2e test peers: the official openai SDK, pytest, the tansu
#     Kafka-protocol broker, confluent-kafka (a SIEM-side consumer), moto (S3-compatible server)
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${ROUTERO_CACHE:-$HOME/.cache/routero}"
mkdir -p "$CACHE"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

"$(dirname "$0")/install-build-deps.sh"

missing=()
command -v xmlsec1 >/dev/null || missing+=(xmlsec1)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v openssl >/dev/null || missing+=(openssl)
command -v promtool >/dev/null || missing+=(prometheus)
command -v sslscan >/dev/null || missing+=(sslscan)
command -v stunnel4 >/dev/null || missing+=(stunnel4)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "setup: starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
pg_isready -h 127.0.0.1 -p 5432 >/dev/null || { echo "setup: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
psql "${ROUTERO_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}/postgres" -qAtc 'SELECT 1' >/dev/null \
  || { echo "setup: cannot log in to PostgreSQL as postgres on 127.0.0.1 (trust auth expected)" >&2; exit 1; }

# Redis on 127.0.0.1:6379 (the shared counters of budgets and rate limits), started if not
# reachable; it keeps nothing on disk.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "setup: starting Redis"
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi

# Cargo tools the Makefile runs, built from crates.io when missing.
command -v cargo-nextest >/dev/null || { echo "setup: installing cargo-nextest"; cargo install -q --locked cargo-nextest@0.9.143; }
command -v cargo-deny >/dev/null || { echo "setup: installing cargo-deny"; cargo install -q --locked cargo-deny@0.20.2; }

venv="$CACHE/venv"
stamp="$venv/.requirements-$(sha256sum tests/e2e/requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating the test virtualenv in $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/e2e/requirements.txt
  touch "$stamp"
fi

"$(dirname "$0")/install-cerbos.sh"
"$(dirname "$0")/install-oidc-provider.sh"
"$(dirname "$0")/install-axe-core.sh"
