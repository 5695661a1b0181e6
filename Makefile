# The README commands: `make demo` (main job on the embedded default), `make test` (whole suite, what CI runs)
# and `make test-fast` (the unit tier on SQLite: tests marked slow or postgres left out, see tests/conftest.py).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast validate bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/persona-agents demo

test: $(STAMP)
	$(BIN)/pytest -q --durations=15

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not postgres" --durations=5

# Loads the code location as the webserver does and fails on any definition error.
validate: $(STAMP)
	$(BIN)/dagster definitions validate -w workspace.yaml

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.budget

clean:
	rm -rf $(VENV) .persona-agents
