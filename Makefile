# sisbridge: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export SISBRIDGE_HOME ?= $(CURDIR)/.sisbridge
# Test processes for `make test` (pytest-xdist): one per core by default.
TEST_WORKERS ?= auto

.DEFAULT_GOAL := help
.PHONY: help install demo test lint format bench docs clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

DBT_SOURCES := $(shell find dbt_project -name '*.sql' -o -name '*.yml' -o -name '*.csv' | grep -v /target/)
dbt_project/target/manifest.json: $(VENV)/.installed $(DBT_SOURCES)
	$(BIN)/python -c "from sisbridge.localrun import ensure_dbt_manifest; ensure_dbt_manifest()"
	@touch $@

install: $(VENV)/.installed dbt_project/target/manifest.json ## Create .venv, install the pinned stack, parse dbt (seconds when nothing changed)

demo: install ## Run the demo: local S3 (moto), SQLite store, two schools, two weeks
	$(BIN)/sisbridge demo

test: install ## Run the whole test suite on every core (starts its own S3 endpoint and PostgreSQL per worker)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: install ## ruff (incl. Airflow AIR rules) and sqlfluff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint dbt_project

format: install ## Apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install ## Benchmarks: 10k/100k/1M rosters end to end into bench/results.json (BENCH_SIZES=10k,100k)
	$(BIN)/python bench/run.py

.PHONY: bench-schools
bench-schools: install ## 20 schools x 20k rows at once under a real scheduler (LocalExecutor, PostgreSQL, transform as one task)
	$(BIN)/python bench/schools.py --executor local

.PHONY: bench-parse
bench-parse: install ## DAG parsing: each DAG file at 1,000 schools, and a task's start at 10, 100 and 1,000
	$(BIN)/python bench/bench_parse.py

.PHONY: bench-celery
bench-celery: install ## The same schools with CeleryExecutor, two workers and Debian's redis-server
	@command -v redis-server >/dev/null || { echo "bench-celery needs redis-server (apt-get install redis-server)"; exit 2; }
	$(BIN)/python bench/schools.py --executor celery

docs: install ## Build the dbt docs (lineage) into site/dbt-docs/
	$(BIN)/python -c "from pathlib import Path; from sisbridge.transform import build_docs; print(build_docs(Path('site/dbt-docs')))"

clean: ## Remove generated files (keeps .venv)
	rm -rf .sisbridge dbt_project/target dbt_project/logs site .pytest_cache
