# engineops.fleet: the two commands of the README (`make demo`, `make test`)
# and the steps they are made of. Every target installs what it needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
INVENTORY ?= inventories/demo
MODE ?= run
# This checkout, seen by Ansible as the collection engineops.fleet.
COLLECTIONS := .ansible/collections
ANSIBLE_ENV := ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/$(COLLECTIONS)

.PHONY: help venv docker images demo demo-down collection-path eval test sanity lint bench bench-rollout bench-verdicts clean

help:
	@echo "make demo   - bring up the local demo fleet of reference Engines and run the demo"
	@echo "make test   - every test: simulator, unit, integration, sanity, lint"
	@echo "make images - build the reference Engine's release images into the local registry"
	@echo "make eval ENGINE=engine-demo-01 [MODE=run|baseline|compare] - the eval suite on one Engine"
	@echo "make bench  - benchmarks"
	@echo "make bench-rollout [ROLLOUT_ARGS='--engines 10 --modes batched'] - a rollout: the collection against a plain playbook and a shell loop"

venv:
	@scripts/venv.sh

docker:
	@scripts/ensure-docker.sh

images: venv docker
	@$(PY) -m tests.testbed.images

demo: images collection-path
	@$(PY) -m tests.testbed.demo

collection-path:
	@mkdir -p $(COLLECTIONS)/ansible_collections/engineops
	@ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/engineops/fleet

# The eval suite on one Engine of an inventory: make eval ENGINE=engine-demo-01 [MODE=run|baseline|compare]
eval: venv collection-path
	@test -n "$(ENGINE)" || { echo "usage: make eval ENGINE=<inventory host, e.g. engine-demo-01> [MODE=run|baseline|compare] [INVENTORY=$(INVENTORY)]"; exit 2; }
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-playbook playbooks/evals.yml -i $(INVENTORY) --limit $(ENGINE) -e engine_eval_mode=$(MODE)

demo-down: venv docker
	@$(PY) -m tests.testbed.fleet down --prefix demo

# Static checks first, pytest last: its closing line is the run's summary.
# Two workers, a test file each at a time: most tests wait on containers, not on the CPU.
# A failed test runs once more (whole rollouts on real containers, with latency judged on a shared 2-core
# machine); the summary counts the reruns, and a test failing twice fails the run.
TEST_WORKERS ?= 2
TEST_RERUNS ?= 1
test: images sanity lint
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile --reruns $(TEST_RERUNS) --reruns-delay 5 $(PYTEST_ARGS)


sanity:
	@scripts/sanity.sh all

lint: venv
	@scripts/lint.sh
	@$(VENV)/bin/antsibull-changelog lint

# Benchmarks: ratios against a baseline measured in the same run.
bench: images
	$(PY) benchmarks/snapshot_1gib.py
	$(PY) benchmarks/inventory_scale.py

# A patch rollout on fleets of 10 and 50 Engines, batched and sequential: the collection against a plain
# community.docker playbook and a stop-and-start shell loop (benchmarks/peers/). community.docker comes from
# PyPI's ansible package, unpacked beside the venv (not into it). Narrow it with ROLLOUT_ARGS, e.g.
# ROLLOUT_ARGS='--engines 10 --modes batched --upgraders collection-fast,playbook'.
ROLLOUT_ARGS ?= --engines 10,50
bench-rollout: images collection-path
	@$(PY) benchmarks/peers/community_docker.py .ansible/peer-collections
	$(PY) benchmarks/rollout.py $(ROLLOUT_ARGS)

# How often engine_eval and engine_metrics miss a planted regression or fail A/A (about 20 min), then the
# batched A/A run: a 10-Engine fleet rolled out 20 times in batches of 1-5-4, every gate on (2 hours or more).
bench-verdicts: images
	$(PY) benchmarks/verdict_reliability.py --runs 20
	$(PY) benchmarks/verdict_reliability.py --batched --runs 20

clean:
	rm -rf tests/output .ansible .pytest_cache build
