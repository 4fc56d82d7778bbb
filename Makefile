# The two commands: `make run` (routero up on embedded defaults) and `make test` (everything).
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
ROUTERO_CACHE ?= $(HOME)/.cache/routero
export ROUTERO_CACHE
VENV := $(ROUTERO_CACHE)/venv
# Each test step keeps its output here; `make test` ends with how many tests of each kind ran.
LOGS := $(ROUTERO_CACHE)/test-logs
SHELL := bash
.SHELLFLAGS := -o pipefail -ec

.PHONY: run test build lint policies unit e2e bench setup setup-build

## make run: build and start control plane + data plane in one process (data in ./data)
run: setup-build
	cargo build --locked --bin routero
	$(CARGO_TARGET_DIR)/debug/routero up

setup-build:
	@./scripts/install-build-deps.sh
	@./scripts/install-cerbos.sh

## make test: install/start what tests need, then formatting, lints, policy tests, unit, store and e2e tests
test: setup lint policies unit e2e
	@echo "make test: $$(grep -ho '[0-9]* tests executed' $(LOGS)/policies.log) (Cerbos policies);" \
	  "$$(grep -ho '[0-9]* tests run: [0-9]* passed[^,]*' $(LOGS)/unit.log | tail -n 1) (Rust);" \
	  "$$(grep -hoE '[0-9]+ passed[^=]*in' $(LOGS)/e2e.log | tail -n 1 | sed 's/ in$$//') (end to end)"

setup:
	./scripts/setup-test-env.sh

build:
	cargo build --locked --workspace --bins

## lint: formatting, clippy, and cargo deny (licenses, banned crates, sources; see deny.toml)
lint:
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	cargo deny --log-level error check licenses bans sources

## Cerbos policy tests: every role x resource x action (policies/tests)
policies:
	@mkdir -p $(LOGS)
	$(ROUTERO_CACHE)/bin/cerbos compile policies/ | tee $(LOGS)/policies.log

## Rust tests; PostgreSQL is required here (plain `cargo test` skips its half when unreachable)
unit:
	@mkdir -p $(LOGS)
	ROUTERO_REQUIRE_POSTGRES=1 cargo nextest run --locked --workspace --no-fail-fast 2>&1 | tee $(LOGS)/unit.log

e2e: build
	@mkdir -p $(LOGS)
	cd tests/e2e && ROUTERO_BIN_DIR=$(CARGO_TARGET_DIR)/debug $(VENV)/bin/python -m pytest -q -p no:cacheprovider | tee $(LOGS)/e2e.log

## make bench: release build, then the data plane against direct and bare-proxy baselines
bench: setup
	./bench/run.sh
