# The two commands: `make run` (collector on the embedded store) and `make test` (the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?= ./driftline-data

.PHONY: run test lint peers bench clean

# torch is pinned first: a bare `torch` requirement from the extras would otherwise pull the
# newest (multi-GB CUDA) build; 2.13.0 is the CPU wheel on the CI machine's disk.
$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0

# Editable install in strict mode: a tree of links that mypy and pytest both see as `driftline.*`.
install-%: $(VENV)/bin/python
	$(PIP) install --quiet -e ".[$*]" --config-settings editable_mode=strict

run: install-all
	$(VENV)/bin/driftline serve --data $(DATA)

lint: install-dev
	$(VENV)/bin/ruff check sdk store ingest detectors review evaluators finetune alerts api demo cli tests bench examples deploy
	$(VENV)/bin/ruff format --check sdk store ingest detectors review evaluators finetune alerts api demo cli tests bench examples deploy
	$(VENV)/bin/mypy -p driftline.sdk -p driftline.store -p driftline.ingest -p driftline.detectors \
		-p driftline.review -p driftline.evaluators -p driftline.finetune -p driftline.alerts -p driftline.api -p driftline.demo \
		-p driftline.cli
	$(VENV)/bin/mypy examples
	$(VENV)/bin/lint-imports --no-cache

# Real peers the tests talk to (Debian packages): installed when missing and we may (root or
# password-less sudo); otherwise the tests that need them are skipped, saying so.
PEERS := prometheus-alertmanager prometheus chromium
peers:
	@missing=""; for p in $(PEERS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo"; \
		else echo "not installed:$$missing (apt-get install$$missing); their tests are skipped"; exit 0; fi; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq$$missing; \
	fi

test: lint peers
	$(VENV)/bin/pytest -q

# Every benchmark at full size (hours; ONLY=name runs one), then docs/benchmarks.md from the
# records in docs/benchmarks/ (bench/run_all.py).
bench: install-dev
	$(PY) bench/run_all.py $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache
