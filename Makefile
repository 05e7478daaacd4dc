# The two commands: `make run` serves the platform, `make test` runs every check.
# Both set up what they need on a fresh machine and reuse it on the next run.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ENV_FILE := .run/env

.PHONY: help run test lint typecheck imports pytest services migrate bench clean

help:
	@echo "make run    - set up and serve the platform on http://127.0.0.1:8000"
	@echo "make test   - set up, then ruff, mypy --strict, import-linter and pytest"
	@echo "make bench  - run the benchmarks into bench/results/"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# PostgreSQL + PostGIS and Redis: the configured ones, the local ones, or private ones
# under .run/. Writes the URLs it settled on to .run/env.
services: $(STAMP)
	$(PY) -m infra.deploy.services --env-file $(ENV_FILE)

migrate: services
	set -a && source $(ENV_FILE) && set +a && $(VENV)/bin/ridecoop migrate

run: migrate
	set -a && source $(ENV_FILE) && set +a && exec $(VENV)/bin/ridecoop serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy .

imports: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: services
	set -a && source $(ENV_FILE) && set +a && $(VENV)/bin/pytest

test: lint typecheck imports pytest

bench: migrate
	set -a && source $(ENV_FILE) && set +a && $(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
