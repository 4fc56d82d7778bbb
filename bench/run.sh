#!/usr/bin/env bash
# make bench: release build, then one run measuring all targets on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --bin routero --bin routero-fake-provider --bin routero-bench
"${CARGO_TARGET_DIR:-target}/release/routero-bench" --readme bench/README.md "$@"
