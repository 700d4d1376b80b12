# window: every target a new user needs, documented for `make help`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Most of a test waits on PostgreSQL and child processes: two workers a core keep both busy.
WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-crash test-unit test-integration lint typecheck demo bench bench-fast clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with window and its development tools

test: $(STAMP) lint typecheck ## Lint, type-check, then every test (unit and real PostgreSQL) with a sample of the crash sweep
	$(PY) -m pytest tests -n $(WORKERS) --durations=8 -m "not sweep"

test-crash: $(STAMP) ## The whole crash sweep: a window killed at every crash point, then resumed or aborted
	$(PY) -m pytest tests/integration/test_crash_sweep.py -n $(WORKERS) -m sweep -q

test-unit: $(STAMP) ## Only the fast, service-free tests
	$(PY) -m pytest tests/unit

test-integration: $(STAMP) ## Only the tests against a private PostgreSQL cluster
	$(PY) -m pytest tests/integration

lint: $(STAMP) ## ruff over the code and the tests; import-linter over the layers (pyproject.toml)
	$(VENV)/bin/ruff check orchestrator phases tests bench
	$(VENV)/bin/lint-imports

typecheck: $(STAMP) ## mypy --strict over orchestrator/ and phases/
	$(VENV)/bin/mypy

demo: $(STAMP) ## Two windows against a throwaway local PostgreSQL: one completes, one rolls back
	$(VENV)/bin/window demo

bench: $(STAMP) ## Every benchmark: bench-fast, then backup and rollback against raw pg_dump/pg_restore on 1 GB (BENCH_GB=...)
	$(PY) -m bench.run

bench-fast: $(STAMP) ## Under a minute: start-up of --help and status, overhead and added downtime of a do-nothing window
	BENCH_ONLY=startup,overhead $(PY) -m bench.run

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
