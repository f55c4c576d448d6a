# relayq developer commands. Every target installs what it needs (make tools).
SHELL := /bin/bash
UV := $(CURDIR)/.tools/bin/uv
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
export UV_CACHE_DIR := $(CURDIR)/.tools/uv-cache
export PATH := $(CURDIR)/.tools/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: tools install run test lint bench clean

tools:
	@bash tools/install.sh

install: tools
	@$(UV) sync --frozen --all-packages --quiet

run: install
	@$(UV) run --no-sync relayq localstack

test: install
	@$(UV) run --no-sync pytest -q $(PYTEST_ARGS)

lint: install
	@$(UV) run --no-sync ruff check .
	@$(UV) run --no-sync ruff format --check .
	@$(UV) run --no-sync mypy -p relayq.core -p relayq.worker -p relayq.cli -p relayq.api -p relayq.recovery -p relayq.operator

bench: install
	@$(UV) run --no-sync python -m bench.run

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
