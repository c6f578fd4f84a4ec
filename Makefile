# qhpc-lab: `make lab` runs the product, `make test` runs every test. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
QHPC_DEVICE ?= demo
QHPC_PORT ?= 8006
QHPC_QPU_PORT ?= 8090
export QHPC_STATE_DIR ?= $(CURDIR)/.state
# The JupyterLab extension: TypeScript in labextension/, built into qhpc_lab/labextension.
LABEXT := labextension
LABEXT_BUILT := qhpc_lab/labextension/static/style.js
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/qhpc-lab-labextension
LABEXT_SOURCES := $(shell find $(LABEXT)/src $(LABEXT)/style -type f 2>/dev/null) $(LABEXT)/tsconfig.json
# jlpm (Yarn) comes with jupyter-builder in the venv; Playwright must never fetch a browser.
JLPM := PATH=$(CURDIR)/$(VENV)/bin:$$PATH PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(CURDIR)/$(VENV)/bin/jlpm

.PHONY: lab tutorials test install labextension wheel system-deps lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (Python 3.11 needed)"; exit 1; }
	@echo "make: installing Python packages into $(VENV) (first run: ~2 min)…"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the pinned CPU wheel: an unpinned torch pulls GBs of CUDA packages.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	# make builds the JupyterLab extension itself (below): the wheel's build hook is for pip alone.
	SKIP_JUPYTER_BUILDER=1 $(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP) labextension

# CUDA-Q, the optional extra qhpc-lab[cudaq] (~1.6 GB of CUDA wheels): the tests need it,
# `make lab` and a scheduler host do not.
CUDAQ_STAMP := $(VENV)/.installed-cudaq
$(CUDAQ_STAMP): $(STAMP)
	@echo "make: installing the CUDA-Q extra qhpc-lab[cudaq] for the tests (~1.6 GB)…"
	SKIP_JUPYTER_BUILDER=1 $(PY) -m pip install -q -c constraints.txt -e '.[test,cudaq]'
	touch $(CUDAQ_STAMP)

$(LABEXT)/node_modules/.installed: $(LABEXT)/package.json $(LABEXT)/yarn.lock | $(STAMP)
	@echo "make: installing the JupyterLab extension's npm packages (first run: ~1 min)…"
	cd $(LABEXT) && $(JLPM) install
	touch $@

$(LABEXT_BUILT): $(LABEXT)/node_modules/.installed $(LABEXT_SOURCES)
	@echo "make: building the JupyterLab extension…"
	cd $(LABEXT) && $(JLPM) build:prod

# Built when a source changes, and linked into the venv as `jupyter labextension develop` would.
labextension: $(LABEXT_BUILT)
	@test -L $(LABEXT_LINK) || { rm -rf $(LABEXT_LINK) && mkdir -p $(dir $(LABEXT_LINK)) && \
	  ln -s $(CURDIR)/qhpc_lab/labextension $(LABEXT_LINK); }

# The wheel a site installs (docs/hpc-deployment.md): the package, the built JupyterLab extension,
# the kernelspec, the server extension's config and deploy/, built offline from this venv
# (tests/test_wheel.py builds and installs it the same way).
wheel: install
	@echo "make: building the wheel into dist/…"
	rm -f dist/qhpc_lab-*.whl
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .
	@ls dist/qhpc_lab-*.whl

# Galata and Playwright for the browser tests (the browser is Debian's chromium: system-deps).
$(LABEXT)/ui-tests/node_modules/.installed: $(LABEXT)/ui-tests/package.json $(LABEXT)/ui-tests/yarn.lock | $(STAMP)
	cd $(LABEXT)/ui-tests && $(JLPM) install
	touch $@

# Debian packages the tests use for real: MUNGE (credentials), PostgreSQL (store tests),
# Chromium (browser tests).
system-deps:
	./scripts/system-deps.sh

# The emulated QPU behind Pasqal's QPU API and the scheduler driving it through that API, in the
# background (their own sessions: Ctrl-C must not hit them before Lab), and JupyterLab; discovery
# (kernels and the sidebar alike) reads the targets file written here. However it ends (Lab
# quits, Ctrl-C, the terminal closes, make gets SIGTERM, the recipe's shell is killed: a watchdog
# sees it gone) all three stop. Chunks of 1 s of the device, as the emulated profiles have them
# (a site's default is 10 s: qpu_chunk_seconds).
lab: install
	@set -euo pipefail; umask 077; mkdir -p "$$QHPC_STATE_DIR"; \
	$(VENV)/bin/qhpc kernels install --sys-prefix; \
	targets="$$QHPC_STATE_DIR/targets.toml"; \
	printf 'default = "local"\n[targets.local]\ntype = "scheduler"\nurl = "http://127.0.0.1:%s"\ntoken = "%s"\n' \
	  $(QHPC_PORT) "$$($(VENV)/bin/qhpc scheduler token --uid $$(id -u) --ttl 30d)" > "$$targets"; \
	echo "make lab: starting the emulated QPU (profile $(QHPC_DEVICE)) behind the QPU API on port $(QHPC_QPU_PORT), and the scheduler on port $(QHPC_PORT)…"; \
	setsid $(VENV)/bin/qhpc qpu serve --profile $(QHPC_DEVICE) --port $(QHPC_QPU_PORT) --host 127.0.0.1 \
	  > "$$QHPC_STATE_DIR/qpu.log" 2>&1 & qpu=$$!; \
	QHPC_QPU_CHUNK_SECONDS=1 setsid $(VENV)/bin/qhpc scheduler serve --qpu-url http://127.0.0.1:$(QHPC_QPU_PORT) --port $(QHPC_PORT) --host 127.0.0.1 \
	  > "$$QHPC_STATE_DIR/scheduler.log" 2>&1 & scheduler=$$!; \
	lab=; trap 'kill $$lab $$scheduler $$qpu 2>/dev/null; wait $$lab $$scheduler $$qpu || true; echo "make lab: scheduler and QPU stopped"' EXIT; \
	trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; \
	for _ in $$(seq 300); do \
	  kill -0 $$qpu 2>/dev/null || { cat "$$QHPC_STATE_DIR/qpu.log"; \
	    echo "make lab: the emulated QPU did not start (port $(QHPC_QPU_PORT) taken? make lab QHPC_QPU_PORT=8091)" >&2; exit 1; }; \
	  kill -0 $$scheduler 2>/dev/null || { cat "$$QHPC_STATE_DIR/scheduler.log"; \
	    if grep -q "port $(QHPC_PORT) is taken" "$$QHPC_STATE_DIR/scheduler.log"; then \
	      free=$$($(PY) -c 'import socket; print(next(p for p in range(8010, 8100) if socket.socket().connect_ex(("127.0.0.1", p))))'); \
	      echo "make lab: port $(QHPC_PORT) is taken: make lab QHPC_PORT=$$free" >&2; \
	    else echo "make lab: the scheduler did not start" >&2; fi; exit 1; }; \
	  $(PY) -c 'import sys, httpx; httpx.get(sys.argv[1], timeout=1).raise_for_status()' http://127.0.0.1:$(QHPC_PORT)/health 2>/dev/null && break; \
	  sleep 0.2; \
	done; \
	echo "make lab: scheduler at http://127.0.0.1:$(QHPC_PORT), log $$QHPC_STATE_DIR/scheduler.log"; \
	echo "make lab: emulated QPU at http://127.0.0.1:$(QHPC_QPU_PORT)/api/v1, log $$QHPC_STATE_DIR/qpu.log"; \
	notebooks=.; [ -d notebooks ] && notebooks=notebooks; \
	root=(); [ "$$(id -u)" = 0 ] && root=(--allow-root); \
	QHPC_TARGETS_FILE="$$targets" $(VENV)/bin/jupyter lab --notebook-dir="$$notebooks" "$${root[@]}" & lab=$$!; \
	( while kill -0 $$$$ 2>/dev/null && kill -0 $$lab 2>/dev/null; do sleep 1; done; \
	  kill $$lab $$scheduler $$qpu 2>/dev/null ) & \
	wait $$lab

# What the tests need, made side by side (-j): on a fresh machine the Debian packages, the CUDA-Q
# wheels and the npm packages download at once rather than one after another.
TEST_DEPS := install $(CUDAQ_STAMP) system-deps $(LABEXT)/ui-tests/node_modules/.installed

test:
	$(MAKE) -j4 -Oline --no-print-directory $(TEST_DEPS)
	$(VENV)/bin/ruff check qhpc_lab tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -rs --durations=25

lint: install
	$(VENV)/bin/ruff check qhpc_lab tests benchmarks
	$(VENV)/bin/ruff format --check qhpc_lab tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

bench: install
	$(PY) benchmarks/api.py

# Every tutorial re-run from one start as make lab's (its profile and ports, a fresh state
# folder), in order, and its outputs written back: what is stored tells one run's story
# (docs/client.md, "Tutorials"). Nothing is written unless every notebook ran. 04 imports
# CUDA-Q: CUDAQ_STAMP installs the cudaq extra where this Makefile defines it.
tutorials: $(STAMP) $(CUDAQ_STAMP)
	$(PY) scripts/rerun_tutorials.py --profile $(QHPC_DEVICE) --port $(QHPC_PORT) --qpu-port $(QHPC_QPU_PORT)

clean:
	rm -rf $(VENV) .state .pytest_cache test-artifacts qhpc_lab/labextension .hub
	rm -rf $(LABEXT)/node_modules $(LABEXT)/lib $(LABEXT)/tsconfig.tsbuildinfo $(LABEXT)/ui-tests/node_modules
