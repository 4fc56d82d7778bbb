#!/usr/bin/env bash
# make bench: release build, then one run measuring all targets on this machine, then the
# guardrail scanner's throughput and the snapshot channel's authentication cost (criterion);
# every table is written into bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --bin routero --bin routero-fake-provider --bin routero-bench
"${CARGO_TARGET_DIR:-target}/release/routero-bench" --readme bench/README.md "$@"

# Runs a criterion benchmark and writes its medians between <!-- MARKER:begin/end --> in
# bench/README.md: criterion_table MARKER "header" crate bench
criterion_table() {
  local log
  log=$(mktemp)
  cargo bench --locked -p "$3" --bench "$4" -- --warm-up-time 1 --measurement-time 3 | tee "$log"
  python3 - "$log" bench/README.md "$1" "$2" <<'PY'
import re, sys
log, readme, marker, header = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], sys.argv[4]
# A benchmark's name (group/function/parameter), then its time, then its throughput if any.
rows = re.findall(r"^\S+?/(\S+)/([^\n]+?)\s*\n?\s*time:\s+\[\S+ \S+ (\S+) (\S+)[^\n]*(?:\n\s+thrpt:\s+\[\S+ \S+ (\S+) (\S+))?", log, re.M)
columns = header.split(" | ")
table = ["| " + header + " |", "|" + "---|" * len(columns)]
for kind, size, time, time_unit, rate, rate_unit in rows:
    value = f"{rate} {rate_unit}" if rate else f"{time} {time_unit}"
    table.append(f"| {kind} | {size.strip()} | {value} |")
text = open(readme).read()
block = f"<!-- {marker}:begin -->\n" + "\n".join(table) + f"\n<!-- {marker}:end -->"
text = re.sub(rf"<!-- {marker}:begin -->.*<!-- {marker}:end -->", lambda _: block, text, flags=re.S)
open(readme, "w").write(text)
PY
  rm -f "$log"
}

criterion_table guard "input | KiB | throughput (median)" routero-guard scan
# The snapshot channel's authentication: one tag check per message received, none per request.
criterion_table snapshot "message | size | CPU per check (median)" routero-proto verify
