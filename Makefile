# vericall developer entry points. Every target that needs tools runs
# scripts/setup first, which installs only what is missing (seconds otherwise).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := run

CARGO ?= cargo

# rustup's cargo may not be on PATH in non-login shells (CI).
export PATH := $(HOME)/.cargo/bin:$(PATH)
# Fetched by scripts/setup; loaded at runtime (ort "load-dynamic").
export ORT_DYLIB_PATH := $(CURDIR)/.deps/onnxruntime/libonnxruntime.so.1.32.0
# Browser used by tests/browser/*.mjs; override with CHROMIUM=/path make test.
export CHROMIUM ?= /usr/bin/chromium

.PHONY: setup run lint test bench clean

setup:
	scripts/setup

run: setup
	$(CARGO) run --release -- serve --dev

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings
	# The server as shipped (no `testkit`), and everything with every feature.
	$(CARGO) clippy --lib --bins -- -D warnings
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	# Licences, bans and sources of the dependency tree (deny.toml; advisories need GitHub).
	$(CARGO) deny --offline check --hide-inclusion-graph licenses bans sources

# nextest does not run doctests, hence the extra `cargo test --doc`. The store suite also runs
# against a throwaway PostgreSQL server (scripts/test-postgres), stopped again when the tests end,
# pass or fail; deploy/ is schema-checked.
test: setup lint
	scripts/validate-deploy
	pg="$$(scripts/test-postgres start)"; eval "$$pg"; \
	trap 'scripts/test-postgres stop' EXIT; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --profile ci --no-tests=warn; \
	  $(CARGO) test --doc; \
	else \
	  $(CARGO) test; \
	fi

bench: setup
	$(CARGO) bench

clean:
	$(CARGO) clean
	rm -rf tests/artifacts
