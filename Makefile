# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
SYSTEMS ?= 1
MQTT_URL ?=
PYTEST_ARGS ?=
# pytest-xdist workers, each in a network namespace of its own (tests/netns-python)
TEST_WORKERS ?= 2
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never

# Each container image installs its service's extra, pinned from uv.lock.
IMAGE_SERVICES := slave_agent master_core modbus_gateway can_gateway config_ui integrations fleet_view
EXPORT = $(UV) export --frozen --no-hashes --no-dev --no-emit-project --extra

.PHONY: run test check lint typecheck docs docs-check requirements bench fault-matrix chaos deps clean help

help:
	@echo "make run    start the whole stack with a simulated battery (SYSTEMS=N, MQTT_URL=...)"
	@echo "make test   install what the tests need and run the suite"
	@echo "make check  ruff + mypy;  make docs  regenerate docs/ from the code;  make bench"
	@echo "make fault-matrix  inject every fault in every operating state into the plant (~30 min)"
	@echo "make chaos  kill, cut and fuzz the running stack, write docs/data/chaos.json (CHAOS_ARGS=--quick)"

# uv itself, when the machine has none: a private venv, so no system Python is touched
$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet 'uv>=0.5,<1'

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	@touch $@

run: $(VENV)/.synced
	$(PY) -m services --systems $(SYSTEMS) $(if $(MQTT_URL),--mqtt-url $(MQTT_URL))

deps:
	@bash deploy/install-system-deps.sh

# The container tests run after the rest, on the host's network, where the engine publishes the
# stack's ports. Both runs always run; exit code 5 (nothing selected by PYTEST_ARGS) is no failure.
test: deps $(VENV)/.synced check docs-check
	@rc=0; \
	BMS_TEST_PYTHON=$(PY) $(PY) -m pytest --dist loadfile \
	  --tx $(TEST_WORKERS)*popen//python=$(CURDIR)/tests/netns-python \
	  --ignore=tests/containers $(PYTEST_ARGS) || rc=$$?; \
	$(PY) -m pytest tests/containers $(PYTEST_ARGS) || { [ $$? -eq 5 ] || rc=1; }; \
	[ $$rc -eq 0 ] || [ $$rc -eq 5 ]

check: lint typecheck

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy shared services

docs: $(VENV)/.synced requirements
	$(PY) -m shared.docgen
	$(PY) -m services.modbus_gateway.docgen

docs-check: $(VENV)/.synced
	$(PY) -m shared.docgen --check
	$(PY) -m services.modbus_gateway.docgen --check
	@for s in $(IMAGE_SERVICES); do \
	  $(EXPORT) $$s | diff -q deploy/requirements/$$s.txt - >/dev/null || \
	  { echo "deploy/requirements/$$s.txt does not match uv.lock: run make requirements"; exit 1; }; \
	done

requirements: | $(UV)
	@mkdir -p deploy/requirements
	@for s in $(IMAGE_SERVICES); do $(EXPORT) $$s > deploy/requirements/$$s.txt || exit 1; done

# every bench/bench_*.py; bench_fleet.py (the fleet's central tier, ~5 min) needs rabbitmq-server
# bench/bench_capacity.py steps up to the first system count past the knee (CAPACITY_ARGS, e.g.
# --max-systems 16 --seconds 10; --help lists them).
CAPACITY_ARGS ?=
bench: $(VENV)/.synced
	@for b in bench/bench_*.py; do echo "== $$b"; \
	  $(PY) $$b $(if $(CAPACITY_ARGS),$$([ $$b = bench/bench_capacity.py ] && echo $(CAPACITY_ARGS))) \
	  || exit 1; done
	@echo "== bench/bench_soc_field.py commissioned"; $(PY) bench/bench_soc_field.py commissioned

# Every injectable fault through the plant (own network namespace, about 10 min), then the docs.
fault-matrix: $(VENV)/.synced
	$(PY) bench/fault_matrix.py $(FAULT_MATRIX_ARGS)
	$(PY) -m shared.docgen

# Kills, network cuts and fuzz against the running stack (own network namespace, about 15 min;
# CHAOS_ARGS=--quick for a few minutes), then the docs (docs/chaos.md).
chaos: $(VENV)/.synced
	@$(PY) bench/chaos.py $(CHAOS_ARGS); rc=$$?; $(PY) -m shared.docgen; exit $$rc

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
