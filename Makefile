# DistCache developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODES ?= 3
BASE_PORT ?= 8080
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create the virtualenv and install DistCache with dev tools

.PHONY: run
run: $(STAMP) ## Run a local cluster: 3 nodes (NODES=N) from port 8080 (BASE_PORT=P), set-up included; Ctrl-C stops it
	$(VENV)/bin/distcache local up --nodes $(NODES) --base-port $(BASE_PORT) --config config.yaml --dir .local

.PHONY: run-node
run-node: $(STAMP) ## Run one standalone node on port 8080 (BASE_PORT=P)
	$(VENV)/bin/distcache-node --config config.yaml --port $(BASE_PORT)

.PHONY: status
status: $(STAMP) ## Members, states, keys and migration progress of the `make run` cluster
	$(VENV)/bin/distcache local status --dir .local

.PHONY: scale
scale: $(STAMP) ## Resize the `make run` cluster: make scale NODES=5
	$(VENV)/bin/distcache local scale --dir .local --nodes $(NODES)

.PHONY: test
test: $(STAMP) ## Run every test tier this machine can run (set-up included)
	@scripts/ensure-debs.sh curl=curl
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(STAMP) ## Only the fast in-process tests
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff and mypy (strict)
	$(VENV)/bin/ruff check node operator tests bench
	$(VENV)/bin/mypy

.PHONY: bench
bench: $(STAMP) ## Benchmarks side by side with their anchors; writes docs/benchmarks.md
	@scripts/ensure-debs.sh wrk=wrk redis-server=redis-server redis-benchmark=redis-tools
	$(PY) bench/run.py
	$(PY) bench/cluster.py

.PHONY: clean
clean: ## Remove the venv, caches and local cluster state
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/results
