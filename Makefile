# Two commands do all set-up on a fresh machine (Python 3.11 and pip):
#   make quickstart   # train clean and adversarial on the synthetic task, print a table
#   make test         # lint, then the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt

.PHONY: quickstart test test-all lint install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test,hf]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

quickstart: $(VENV)/.installed
	$(BIN)/llama-adv quickstart --workdir runs/quickstart

lint: $(VENV)/.installed-test
	$(BIN)/ruff check llama_adv configs experiments tests benchmarks
	$(BIN)/ruff format --check llama_adv configs experiments tests benchmarks

# The CI suite: everything but tests marked slow (full real-data preparations, ~1 h on 2 cores).
test: lint
	$(BIN)/pytest -n 2 -m "not slow" --durations=25 tests

test-all: lint
	$(BIN)/pytest -n 2 tests
