# The two commands: `make run` (routero up on embedded defaults) and `make test` (everything).
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
ROUTERO_CACHE ?= $(HOME)/.cache/routero
export ROUTERO_CACHE
VENV := $(ROUTERO_CACHE)/venv

.PHONY: run test build lint policies unit e2e bench setup setup-build

## make run: build and start control plane + data plane in one process (data in ./data)
run: setup-build
	cargo build --locked --bin routero
	$(CARGO_TARGET_DIR)/debug/routero up

setup-build:
	@command -v protoc >/dev/null || ./scripts/setup-test-env.sh
	@./scripts/install-cerbos.sh

## make test: install/start what tests need, then formatting, lints, policy tests, unit, store and e2e tests
test: setup lint policies unit e2e

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
	$(ROUTERO_CACHE)/bin/cerbos compile policies/

unit:
	cargo nextest run --locked --workspace --no-fail-fast

e2e: build
	cd tests/e2e && ROUTERO_BIN_DIR=$(CARGO_TARGET_DIR)/debug $(VENV)/bin/python -m pytest -q -p no:cacheprovider

## make bench: release build, then the data plane against direct and bare-proxy baselines
bench: setup
	./bench/run.sh
