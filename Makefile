# rfdetr-pipelines developer commands. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch and torchvision are installed first, pinned, so the resolver never pulls a newer (CUDA, multi-GB) build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,onnx,openvino,pipeline,logging,serve
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.DEFAULT_GOAL := help
# Debian packages the tests use as real servers and browsers (installed only when missing).
SYSTEM_PACKAGES ?= chromium prometheus-pushgateway curl
SYSTEM_BINARIES ?= /usr/bin/chromium /usr/bin/prometheus-pushgateway /usr/bin/curl

.PHONY: help install system-deps test lint pytest demo clean set-version images

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv (if missing) and install the project with the test extras

system-deps: ## install the Debian packages the tests need (root + apt-get), when missing
	@missing=0; for b in $(SYSTEM_BINARIES); do [ -x "$$b" ] || missing=1; done; \
	if [ $$missing = 0 ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	else \
		echo "note: $(SYSTEM_PACKAGES) missing and cannot be installed here (needs root and apt-get); the tests that need them will be skipped with a reason"; \
	fi

lint: install ## ruff on the whole tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# One pytest process per test folder. The merged suite's SIGSEGV in one process (tests/data ...
# tests/fuzz) was OpenVINO's CPU plugin leaving a dangling alternate signal stack, hit by the
# next SIGCHLD once a DataLoader had installed its handler; fixed (rfdetr/export/sigstack.py).
TEST_GROUPS ?= tests/conformance tests/data tests/deploy tests/evaluation tests/export tests/fuzz \
	tests/infra tests/k8s tests/models tests/multinode tests/pipeline tests/serving tests/training "tests/test_*.py"
pytest: install system-deps ## the test suite only
	@set -e; failed=""; for group in $(TEST_GROUPS); do \
		echo "== pytest $$group"; $(VENV)/bin/pytest -q $$group || failed="$$failed $$group"; \
	done; if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

test: lint pytest ## install, lint and run every test (what CI runs)

# `make demo DATASET=path-or-s3-uri MODEL=nano EPOCHS=5`; the default generates a dataset.
DATASET ?=
MODEL ?= tiny
EPOCHS ?= 20
demo: install ## the whole pipeline on this machine (CPU): object store, data, train ... publish
	$(PY) -m pipelines.demo --dataset "$(DATASET)" --model "$(MODEL)" --epochs "$(EPOCHS)"

set-version: ## set the version everywhere (VERSION=x.y.z): pyproject and every image tag
	@test -n "$(VERSION)" || { echo 'usage: make set-version VERSION=x.y.z'; exit 2; }
	$(PY) containers/set_version.py "$(VERSION)"
	$(PIP) install --quiet --no-deps -e .

images: ## build the GPU and CPU images (tag: package version) where docker or podman works
	containers/build.sh

clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
