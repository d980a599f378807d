# DistCache developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# make run's cluster size; make kind-up's is 1 unless NODES is given
NODES ?= 3
BASE_PORT ?= 8080
RESP_BASE_PORT ?= 6379
PYTEST_ARGS ?=
TIERS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create the virtualenv and install DistCache with dev tools

.PHONY: run
run: $(STAMP) ## Run a local cluster: 3 nodes (NODES=N) from port 8080 (BASE_PORT=P), Redis protocol from 6379 (RESP_BASE_PORT=P, 0: off), set-up included; Ctrl-C stops it
	$(VENV)/bin/distcache local up --nodes $(NODES) --base-port $(BASE_PORT) --resp-base-port $(RESP_BASE_PORT) --config config.yaml --dir .local

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
test: $(STAMP) ## Every test tier, set-up included (scripts/tiers.py: the tiers, their needs, how a skip is judged); TIERS="unit http" picks some
	@$(PY) scripts/tiers.py $(TIERS) -- $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(STAMP) ## Only the fast in-process tests
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

# --- Helm chart and raw manifests (charts/distcache; helm from the Go module proxy, cached in
# $$DISTCACHE_DEV_CACHE/bin/helm-<version> by scripts/helm.sh).
.PHONY: manifests
manifests: $(STAMP) ## Render charts/distcache into manifests/ (operator, examples, monitoring)
	$(PY) scripts/manifests.py

.PHONY: helm
helm: ## Build the pinned helm (scripts/helm.sh) and print its path
	@scripts/helm.sh --path

# --- Kubernetes test bed (kind, offline; build outputs cached in $$DISTCACHE_DEV_CACHE, default
# /var/cache/distcache): see scripts/kind/README.md.
.PHONY: base-image
base-image: ## Build the local Python base image (debootstrapped bookworm) for machines that cannot pull python:3.11-slim
	scripts/images.sh base

.PHONY: images
images: ## Build distcache/node, distcache/operator and the e2e tier's distcache/client, tagged with the project version
	scripts/images.sh all

.PHONY: kind-preflight
kind-preflight: ## Say what this machine lacks for the kind test bed (Docker, runtime wrapper, cgroups, disk)
	@scripts/kind/preflight.sh

.PHONY: cert-manager
cert-manager: ## Build cert-manager's controller (v1.19.1, Go module proxy) into an image, and its CRDs, for the e2e tier (cached)
	@scripts/kind/ensure-docker.sh
	scripts/cert-manager.sh image

.PHONY: prometheus-operator-crds
prometheus-operator-crds: ## Fetch the Prometheus Operator's CRDs (Go module proxy) for the e2e tier; prints their folder
	@scripts/prometheus-operator-crds.sh

.PHONY: kind-node-image
kind-node-image: ## Build the offline kind node image (Kubernetes v1.34.4; cold ~20-25 min on 2 cores, cached after)
	@scripts/kind/ensure-docker.sh
	scripts/kind/build-node-image.sh

.PHONY: kind-up
kind-up: ## Start the kind cluster (builds what is missing, loads the images); prints export KUBECONFIG=...; NODES=4: a control plane and 3 workers in 2 zones
	@NODES=$(if $(filter command line environment,$(origin NODES)),$(NODES),1) scripts/kind/kind-up.sh

.PHONY: kind-down
kind-down: ## Delete the kind cluster
	@scripts/kind/kind-down.sh

.PHONY: e2e-kind
e2e-kind: $(STAMP) ## The kind tier alone: kind-up, pytest e2e/, kind-down (KEEP_CLUSTER=1 keeps it)
	@$(PY) scripts/tiers.py kind -- $(PYTEST_ARGS)

.PHONY: test-nodes
test-nodes: $(STAMP) ## The nodes tier alone: node and zone faults on a fresh 4-node kind cluster (make test runs it too)
	@$(PY) scripts/tiers.py nodes -- $(PYTEST_ARGS)

.PHONY: e2e
e2e: $(STAMP) ## The e2e suite: on a fresh kind cluster (kind-up with the Helm chart, pytest e2e/, kind-down), or with KUBECONFIG set on that cluster, left as found
	@scripts/e2e.sh $(PY) $(PYTEST_ARGS)

.PHONY: dashboards
dashboards: $(STAMP) ## Regenerate the Grafana dashboards and alert rules (into charts/distcache/)
	$(PY) -m monitoring.generate

.PHONY: lint
lint: $(STAMP) ## ruff and mypy (strict)
	$(VENV)/bin/ruff check node operator tests bench monitoring e2e scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy monitoring
	$(VENV)/bin/mypy --strict scripts/tiers.py
	$(VENV)/bin/lint-imports
	@for f in charts/distcache/ci/*-values.yaml; do \
	  echo "helm lint --strict charts/distcache -f $$f"; \
	  scripts/helm.sh lint --strict --quiet charts/distcache -f $$f || exit 1; \
	done

.PHONY: bench
bench: $(STAMP) ## Benchmarks side by side with their anchors; writes docs/benchmarks.md
	@scripts/ensure-debs.sh wrk=wrk redis-server=redis-server redis-benchmark=redis-tools
	$(PY) bench/run.py
	$(PY) bench/cluster.py
	$(PY) bench/resp.py

.PHONY: clean
clean: ## Remove the venv, caches and local cluster state
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/results
