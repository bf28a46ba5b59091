# Two commands on a fresh machine: `make run` (the service on the embedded stack) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench histories clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python worker.py --dev

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy .

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

histories: $(STAMP)
	$(BIN)/python -m tests.histories.record

clean:
	rm -rf $(VENV) .data build *.egg-info .mypy_cache .ruff_cache .pytest_cache
