# Two commands on a fresh machine: `make run` (the service on the embedded stack) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench histories clean compile reliability

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The workflow sandbox re-imports the workflow's modules for every workflow; where the environment
# sets PYTHONDONTWRITEBYTECODE, that means compiling them from source each time (3.5 ms of CPU per
# registration, measured). Compiling once here lets every import read the bytecode. `bench` too:
# the benchmark's baseline workflow (bench/baseline.py) is re-imported the same way, and compiling
# it from source for every workflow made the baseline look slower than it is.
compile: $(STAMP)
	$(BIN)/python -m compileall -q workflows activities common bench starter

# The HTTP API (http://localhost:8000, REGISTRATION_API_*) runs beside the worker, as in
# production; it connects to Temporal at its first request, so it may start first. Ctrl-C stops
# both (the terminal's SIGINT reaches each); the trap ends the API if the worker stops alone.
run: compile
	$(BIN)/python -m starter.http & api=$$!; trap 'kill $$api 2>/dev/null' EXIT; \
	$(BIN)/python worker.py --dev

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy .

# axe-core, for the hosted pages' accessibility check in Chromium (tests/browser), pinned by its
# package-lock.json. Without npm the browser tests need it only where Chromium is installed.
AXE := tests/browser/node_modules/axe-core/axe.min.js
$(AXE): tests/browser/package-lock.json
	@if command -v npm >/dev/null; then cd tests/browser && npm ci --no-audit --no-fund --silent; \
	else echo "npm not found: install it for tests/browser's axe-core check (.ci/run does)"; fi

test: lint $(AXE)
	$(BIN)/pytest

# The reliability suite (docs/reliability.md) at full size, e.g. `make reliability N=300`; `make test`
# runs it at 24 registrations per scenario. Prints the figures at the end.
N ?= 300
reliability: compile
	RELIABILITY_N=$(N) $(BIN)/pytest -m reliability tests/reliability

bench: compile
	$(BIN)/python -m bench

histories: $(STAMP)
	$(BIN)/python -m tests.histories.record

clean:
	rm -rf $(VENV) .data build *.egg-info .mypy_cache .ruff_cache .pytest_cache
