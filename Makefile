# window: every target a new user needs, documented for `make help`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-unit test-integration lint typecheck demo bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with window and its development tools

test: $(STAMP) lint typecheck ## Lint, type-check, then every test (unit and real PostgreSQL): what CI runs
	$(PY) -m pytest tests -n auto --durations=8

test-unit: $(STAMP) ## Only the fast, service-free tests
	$(PY) -m pytest tests/unit

test-integration: $(STAMP) ## Only the tests against a private PostgreSQL cluster
	$(PY) -m pytest tests/integration

lint: $(STAMP) ## ruff over the code and the tests
	$(VENV)/bin/ruff check orchestrator phases tests bench

typecheck: $(STAMP) ## mypy --strict over orchestrator/ and phases/
	$(VENV)/bin/mypy

demo: $(STAMP) ## Two windows against a throwaway local PostgreSQL: one completes, one rolls back
	$(VENV)/bin/window demo

bench: $(STAMP) ## Backup and rollback against raw pg_dump/pg_restore on a 1 GB database (BENCH_GB=...)
	$(PY) -m bench.run

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
