# Entry points for users and CI. Every target installs what it needs on first use.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HOMELAB_CACHE ?= $(HOME)/.cache/homelab-bootstrap
export PATH := $(CURDIR)/$(BIN):$(HOMELAB_CACHE)/tools/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Playbook output without colour codes in logs; tests parse it.
export ANSIBLE_FORCE_COLOR := 0

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/ansible-playbook: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	touch $@

.PHONY: venv
venv: $(BIN)/ansible-playbook ## Create the Python virtualenv with the pinned tools

.PHONY: lock
lock: ## Re-resolve requirements.in into requirements.lock
	rm -rf $(VENV).lock && $(PYTHON) -m venv $(VENV).lock
	$(VENV).lock/bin/pip install --quiet -r requirements.in
	$(VENV).lock/bin/pip freeze --exclude-editable | grep -v '^pip==' > requirements.lock
	rm -rf $(VENV).lock

.PHONY: lint
lint: venv ## ansible-lint (production profile), yamllint, ruff
	$(BIN)/yamllint --strict .
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint --offline

.PHONY: syntax
syntax: venv ## Syntax-check every playbook
	for p in site.yml playbooks/*.yml; do $(BIN)/ansible-playbook --syntax-check "$$p"; done

.PHONY: unit
unit: venv ## pytest unit tests and the inventory rejection suite
	$(BIN)/pytest -q tests/unit

.PHONY: preflight
preflight: venv ## Validate the example inventory (no SSH)
	$(BIN)/ansible-playbook playbooks/preflight.yml -i inventory/example

.PHONY: docker
docker: ## Install and start the docker engine when missing
	$(PYTHON) lab/docker_engine.py

.PHONY: node-images
node-images: docker ## Build the Debian node images (debootstrap, cached)
	$(PYTHON) lab/node_images.py

.PHONY: mirror
mirror: docker venv ## Build the offline mirror from source (cached by version)
	$(BIN)/python lab/mirror/build.py

.PHONY: mirror-up
mirror-up: node-images mirror ## Serve the mirror on the lab network (172.30.0.2)
	$(PYTHON) lab/mirror_server.py start

.PHONY: molecule
molecule: venv node-images mirror-up ## Run every molecule scenario
	for s in molecule/*/molecule.yml; do s=$${s#molecule/}; $(BIN)/molecule test -s "$${s%/molecule.yml}"; done

.PHONY: e2e
e2e: venv node-images mirror-up validate-tools ## End-to-end: fresh lab cluster, then what a user checks (HA, VIP failover, rerun, add a node, the tree dry-run on the API)
	$(BIN)/pytest -v -s --durations=0 tests/e2e

# The node images (debootstrap: mostly downloads and disk writes) build in the background while
# lint, the unit tests and the validation tools' Go builds use the CPUs; the mirror needs them next.
.PHONY: test
test: venv docker ## Everything CI runs
	images_log=$$(mktemp); $(PYTHON) lab/node_images.py > "$$images_log" 2>&1 & images=$$!; \
	status=0; $(MAKE) --no-print-directory lint syntax validate-tools unit validate-tree || status=$$?; \
	images_status=0; wait $$images || images_status=$$?; cat "$$images_log"; rm -f "$$images_log"; \
	if [ $$status -ne 0 ]; then exit $$status; fi; \
	if [ $$images_status -ne 0 ]; then echo "node images failed (above)"; exit $$images_status; fi
	$(MAKE) --no-print-directory molecule e2e

.PHONY: collection
collection: venv ## Build the Ansible collection tarball
	$(BIN)/ansible-galaxy collection build --force --output-path build .

.PHONY: validate-tools
validate-tools: venv ## Build kustomize, kubeconform, kyverno and helm into $(HOMELAB_CACHE)/tools/bin (cached by version)
	$(BIN)/python lab/mirror/build.py --only validate-tools

# The render downloads what the tree vendors (ArgoCD's install manifest, the Gateway API CRDs):
# offline, from the mirror's `gitops` group through a file:// download_mirror_url.
.PHONY: validate-tree
validate-tree: venv validate-tools ## Render the GitOps tree of inventory/example and validate it offline
	$(BIN)/python lab/mirror/build.py --only gitops
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	if ! $(BIN)/ansible-playbook playbooks/gitops.yml -i inventory/example \
		-e gitops_repo_local_path="$$tmp/tree" -e '{"gitops_push": false}' \
		-e download_mirror_url="file://$(HOMELAB_CACHE)/mirror/files" > "$$tmp/render.log" 2>&1; then \
		cat "$$tmp/render.log"; exit 1; fi; \
	$(BIN)/python tools/validate_tree.py "$$tmp/tree"

.PHONY: bench-tree
bench-tree: venv validate-tools ## Benchmark the GitOps tree's render and validation against bare baselines
	$(BIN)/python lab/mirror/build.py --only gitops
	$(BIN)/python tools/bench_tree.py

.PHONY: bench-preflight
bench-preflight: venv ## Benchmark inventory validation on a generated 200-node inventory
	$(BIN)/python tools/bench_preflight.py --nodes 200

.PHONY: lab
lab: venv ## Create or converge the lab cluster (3 control planes + 2 workers) and run site.yml on it
	$(BIN)/python lab/lab.py up

.PHONY: lab-down
lab-down: venv ## Remove the lab's node containers (mirror and caches stay)
	$(BIN)/python lab/lab.py down

.PHONY: bench
bench: venv mirror-up ## Lab benchmark: site.yml fresh / no-op / add a worker at 5-7 nodes against bare kubeadm (~17 min)
	$(BIN)/python tools/bench_lab.py
