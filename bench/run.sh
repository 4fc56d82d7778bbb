#!/usr/bin/env bash
# make bench: release build, the peers installed, then one run measuring all targets on this machine, then the
# guardrail scanner's throughput and the snapshot channel's authentication cost (criterion);
# every table is written into bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --bin routero --bin routero-fake-provider --bin routero-bench
# The peers, from PyPI into the bench's own environments (a failed install is reported in the table).
./bench/peers/install.sh
export ROUTERO_BENCH_PEERS="${ROUTERO_CACHE:-$HOME/.cache/routero}/bench-peers"
"${CARGO_TARGET_DIR:-target}/release/routero-bench" --readme bench/README.md "$@"

# Writes the markdown table on standard input between <!-- MARKER:begin/end --> in
# bench/README.md: write_table MARKER
write_table() {
  python3 -c '
import re, sys
marker, table = sys.argv[1], sys.stdin.read().strip()
text = open("bench/README.md").read()
block = f"<!-- {marker}:begin -->\n{table}\n<!-- {marker}:end -->"
text = re.sub(rf"<!-- {marker}:begin -->.*<!-- {marker}:end -->", lambda _: block, text, flags=re.S)
open("bench/README.md", "w").write(text)
' "$1"
}

# Runs a criterion benchmark and writes its medians as a table: criterion_table MARKER
# "header" crate bench
criterion_table() {
  local log
  log=$(mktemp)
  cargo bench --locked -p "$3" --bench "$4" -- --warm-up-time 1 --measurement-time 3 | tee "$log"
  python3 - "$log" "$2" <<'PY' | write_table "$1"
import re, sys
log, header = open(sys.argv[1]).read(), sys.argv[2]
# A benchmark's name (group/function/parameter), then its time, then its throughput if any.
rows = re.findall(r"^\S+?/(\S+)/([^\n]+?)\s*\n?\s*time:\s+\[\S+ \S+ (\S+) (\S+)[^\n]*(?:\n\s+thrpt:\s+\[\S+ \S+ (\S+) (\S+))?", log, re.M)
columns = header.split(" | ")
print("| " + header + " |")
print("|" + "---|" * len(columns))
for kind, size, time, time_unit, rate, rate_unit in rows:
    value = f"{rate} {rate_unit}" if rate else f"{time} {time_unit}"
    print(f"| {kind} | {size.strip()} | {value} |")
PY
  rm -f "$log"
}

criterion_table guard "input | KiB | throughput (median)" routero-guard scan
# What the detectors catch on the labelled corpus, and how often they cry wolf.
cargo bench --locked -p routero-guard --bench quality | grep '^|' | write_table quality
# The snapshot channel's authentication: one tag check per message received, none per request.
criterion_table snapshot "message | size | CPU per check (median)" routero-proto verify
