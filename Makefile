# One entry point. Every target works on a fresh machine: it installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast test-slow lint format demo bench clean

install: $(STAMP)

# Rebuilt whenever the dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest

# The quick loop while developing, and the end-to-end tests (servers, CLI, webserver) alone.
test-fast: install
	$(BIN)/pytest -m "not slow"

test-slow: install
	$(BIN)/pytest -m slow

demo: install
	$(BIN)/python -m pipelines.demo

bench: install
	$(BIN)/python -m bench.client_throughput

clean:
	rm -rf $(VENV) data/audio data/catalog .dagster_home
