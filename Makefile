# qhpc-lab: `make lab` runs the product, `make test` runs every test. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
QHPC_DEVICE ?= demo
QHPC_PORT ?= 8006
export QHPC_STATE_DIR ?= $(CURDIR)/.state

.PHONY: lab test install system-deps lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (Python 3.11 needed)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the pinned CPU wheel: an unpinned torch pulls GBs of CUDA packages.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use for real: MUNGE (credentials), PostgreSQL (store tests).
system-deps:
	./scripts/system-deps.sh

lab: install
	@echo "Starting the scheduler on the emulated QPU (profile $(QHPC_DEVICE)) on port $(QHPC_PORT)."
	@echo "A bearer token for your uid: $$($(VENV)/bin/qhpc scheduler token --uid $$(id -u))"
	$(VENV)/bin/qhpc scheduler serve --device $(QHPC_DEVICE) --port $(QHPC_PORT) --host 127.0.0.1

test: install system-deps
	$(VENV)/bin/ruff check qhpc_lab tests benchmarks
	$(PY) -m pytest -q -rs

lint: install
	$(VENV)/bin/ruff check qhpc_lab tests benchmarks
	$(VENV)/bin/ruff format --check qhpc_lab tests benchmarks

bench: install
	$(PY) benchmarks/api.py

clean:
	rm -rf $(VENV) .state .pytest_cache test-artifacts
