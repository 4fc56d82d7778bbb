#!/usr/bin/env bash
# make bench: release build, then one run measuring all targets on this machine, then the
# guardrail scanner's throughput and the snapshot channel's authentication cost (criterion);
# every table is written into bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --bin routero --bin routero-fake-provider --bin routero-bench
"${CARGO_TARGET_DIR:-target}/release/routero-bench" --readme bench/README.md "$@"

guard_log=$(mktemp)
cargo bench --locked -p routero-guard --bench scan -- --warm-up-time 1 --measurement-time 3 | tee "$guard_log"
python3 - "$guard_log" bench/README.md <<'PY'
import re, sys
log, readme = open(sys.argv[1]).read(), sys.argv[2]
rows = re.findall(r"^(clean|dirty)/(\d+)\s+time:.*?\n\s+thrpt:\s+\[\S+ \S+ (\S+) (\S+)", log, re.M)
table = ["| input | KiB | throughput (median) |", "|---|---|---|"]
table += [f"| {kind} | {size} | {value} {unit} |" for kind, size, value, unit in rows]
text = open(readme).read()
block = "<!-- guard:begin -->\n" + "\n".join(table) + "\n<!-- guard:end -->"
text = re.sub(r"<!-- guard:begin -->.*<!-- guard:end -->", block, text, flags=re.S)
open(readme, "w").write(text)
PY
rm -f "$guard_log"

# The snapshot channel's authentication: one tag check per message received, none per request.
verify_log=$(mktemp)
cargo bench --locked -p routero-proto --bench verify -- --warm-up-time 1 --measurement-time 3 | tee "$verify_log"
python3 - "$verify_log" bench/README.md <<'PY'
import re, sys
log, readme = open(sys.argv[1]).read(), sys.argv[2]
rows = re.findall(r"^verify/(delta|full)/([^\n]+?)\s*\n?\s*time:\s+\[\S+ \S+ (\S+) (\S+)", log, re.M)
table = ["| message | size | CPU per check (median) |", "|---|---|---|"]
table += [f"| {kind} | {size.strip()} | {value} {unit} |" for kind, size, value, unit in rows]
text = open(readme).read()
block = "<!-- snapshot:begin -->\n" + "\n".join(table) + "\n<!-- snapshot:end -->"
text = re.sub(r"<!-- snapshot:begin -->.*<!-- snapshot:end -->", block, text, flags=re.S)
open(readme, "w").write(text)
PY
rm -f "$verify_log"
