# One entry point. Every target works on a fresh machine: it installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SITE    = $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Test processes: most tests wait on sockets, servers and subprocesses, so two workers on two
# cores take the suite from ~11 to ~7 minutes. A file stays on one worker (its fixtures with it).
TEST_WORKERS ?= 2
PYTEST  = $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: install test test-fast test-slow lint format demo bench bench-client bench-generation chaos clean

install: $(STAMP)

# Rebuilt whenever the dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	# Bytecode now, once: where PYTHONDONTWRITEBYTECODE is set (containers, CI) every CLI start
	# would otherwise compile dagster, pandas and the rest from source (~2x the start-up).
	# uv compiles what it installs; compileall catches a venv that predates this (and our own
	# packages), and skips whatever is compiled already.
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[dev]'
	$(BIN)/python -m compileall -q -j 0 $(SITE) pipelines assets resources sandbox bench \
	|| echo "compileall: files above stay uncompiled (compiled at import instead)"
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/dg check defs  # the definitions load (a code server, as the daemon and UI see them)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(PYTEST)

# The quick loop while developing, and the end-to-end tests (servers, CLI, webserver) alone.
test-fast: install
	$(PYTEST) -m "not slow"

test-slow: install
	$(PYTEST) -m slow

demo: install
	$(BIN)/python -m pipelines.demo

# The end-to-end benchmark against hand-written peers (10-20 min on 2 cores); see bench/README.md.
bench: install
	$(BIN)/python -m bench.end_to_end

bench-client: install
	$(BIN)/python -m bench.client_throughput

# A sheet of 10,000 prompts submitted against its latency bound, and the ledger of a year of
# keys checked for a new sheet (~4 min on 2 cores); see bench/README.md.
bench-generation: install
	$(BIN)/python -m bench.generation

# kill -9 chaos at full size (tests/end_to_end/test_chaos.py; `make test` runs a small subset):
# 3 seeds x 10 kills, local disk and S3 on moto, 150 run ids; prints its figures.
chaos: install
	CHAOS_SEEDS=1,2,3 CHAOS_KILLS=10 CHAOS_STORAGE=local,s3 CHAOS_IDS_PER_DAY=75 \
		$(BIN)/pytest -m chaos -s tests/end_to_end/test_chaos.py

clean:
	rm -rf $(VENV) data/audio data/catalog data/datasets .dagster_home
