#!/usr/bin/env bash
# Installs the Debian packages building Routero needs, when missing: protobuf-compiler (tonic
# and the cerbos crate generate code with protoc), and for SAML's XML signatures (samael binds
# xmlsec with bindgen) pkg-config, libxml2-dev, libxmlsec1-dev and libclang-dev.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for package in protobuf-compiler pkg-config libxml2-dev libxmlsec1-dev libclang-dev; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
