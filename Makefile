# relayq developer commands. Every target installs what it needs, and only that:
# `make run` needs Redis, the local MongoDB and the venv (make tools); the tests
# and benchmarks also need Prometheus and a Kubernetes control plane (make tools-test).
SHELL := /bin/bash
UV := $(CURDIR)/.tools/bin/uv
# Built tools and downloaded wheels are cached outside the clone (see tools/lib.sh),
# so a second clone on the same machine reuses them.
RELAYQ_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/relayq
export RELAYQ_TOOLS_CACHE ?= $(RELAYQ_CACHE)/tools
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
export UV_CACHE_DIR ?= $(RELAYQ_CACHE)/uv
export PATH := $(CURDIR)/.tools/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: tools tools-test venv install install-test run test lint bench soak images dashboards clean

tools:
	@bash tools/install.sh

tools-test:
	@bash tools/install-test.sh

venv:
	@$(UV) sync --frozen --all-packages --quiet

install: tools
	@$(MAKE) --no-print-directory venv

install-test: tools-test
	@$(MAKE) --no-print-directory venv

run: install
	@$(UV) run --no-sync relayq-dev localstack

test: install-test
	@$(UV) run --no-sync pytest -q $(PYTEST_ARGS)

lint: install
	@$(UV) run --no-sync ruff check .
	@$(UV) run --no-sync ruff format --check .
	@$(UV) run --no-sync mypy -p relayq.core -p relayq.worker -p relayq.cli -p relayq.api -p relayq.recovery -p relayq.operator -p relayq.devchain -p relayq.dev -p relayq.relayer -p relayq.signer

bench: install-test
	@$(UV) run --no-sync python -m bench.run

# The chaos suite for DURATION seconds of faults at RATE jobs/s (make test: 75 s at 40/s, 3,000 jobs and 300 purchases).
DURATION ?= 600
RATE ?= 10
soak: install
	@RELAYQ_CHAOS_SECONDS=$(DURATION) RELAYQ_CHAOS_RATE=$(RATE) $(UV) run --no-sync pytest -q tests/chaos \
	  --timeout=$$(( $(DURATION) + 900 )) $(PYTEST_ARGS)

# One image per service, each a target of the one Dockerfile, built with the Docker engine.
IMAGE_TAG ?= dev
images:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { \
	  echo "make images: no Docker engine reachable here; build the Dockerfile's targets on a machine with one" >&2; exit 1; }
	for target in api worker recovery operator; do \
	  docker build --target $$target -t relayq/$$target:$(IMAGE_TAG) . || exit 1; \
	done

# Grafana dashboards, generated into deploy/helm/relayq/files/dashboards/ (commit the JSON).
dashboards: install
	@$(UV) run --no-sync python deploy/observability/dashboards.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
