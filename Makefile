# The two commands: `make run` (collector on the embedded store) and `make test` (the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?= ./driftline-data

.PHONY: run test lint bench-ingest clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Editable install in strict mode: a tree of links that mypy and pytest both see as `driftline.*`.
install-%: $(VENV)/bin/python
	$(PIP) install --quiet -e ".[$*]" --config-settings editable_mode=strict

run: install-server
	$(VENV)/bin/driftline serve --data $(DATA)

lint: install-dev
	$(VENV)/bin/ruff check sdk store collector tests bench
	$(VENV)/bin/ruff format --check sdk store collector tests bench
	$(VENV)/bin/mypy -p driftline.sdk -p driftline.store -p driftline.collector

test: lint
	$(VENV)/bin/pytest -q

bench-ingest: install-dev
	$(PY) bench/ingest.py

clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache
