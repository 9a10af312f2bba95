# The front door. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=

.PHONY: run demo test test-postgres test-js lint format migrate revision bench fuzz clean venv

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "authsvc needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUNTIME_STAMP): requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(RUNTIME_STAMP)

venv: $(DEV_STAMP)

## run: migrate the default SQLite database and serve on 127.0.0.1:8000
run: $(RUNTIME_STAMP)
	$(BIN)/alembic upgrade head
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

## demo: serve the demo SPA (examples/spa) on http://localhost:3000, beside `make run`
demo: $(RUNTIME_STAMP)
	$(BIN)/python -m examples.spa

## test-js: the reference JS client's unit tests (node's test runner; also part of `make test`)
test-js:
	node --test clients/js/test/*.test.js

## test: the whole suite on SQLite
test: $(DEV_STAMP)
	env -u TEST_DATABASE_URL $(BIN)/pytest $(PYTEST_ARGS)

## test-postgres: the same suite on PostgreSQL ($(TEST_DATABASE_URL))
test-postgres: $(DEV_STAMP)
	TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest $(PYTEST_ARGS)

## lint: ruff (lint + format check) and alembic check (models vs migrations)
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  $(BIN)/alembic -x url=sqlite:///$$tmp/check.db upgrade head >/dev/null 2>&1 && \
	  $(BIN)/alembic -x url=sqlite:///$$tmp/check.db check

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## migrate: bring DATABASE_URL (default: instance/authsvc.db) to the newest schema
migrate: $(RUNTIME_STAMP)
	$(BIN)/alembic upgrade head

## revision: autogenerate a migration, e.g. make revision m="add thing" (review it by hand)
revision: $(DEV_STAMP)
	$(BIN)/alembic revision --autogenerate -m "$(m)"

## fuzz: schemathesis against the service's own OpenAPI document (about 2 minutes)
fuzz: $(DEV_STAMP)
	$(BIN)/python -m fuzz

## bench: /me, refresh and login under wrk; BENCH_COMPARE=<checkout> side by side (bench/README.md)
bench: $(RUNTIME_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
