# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip

.PHONY: demo test lint install codegen clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency pins change. pip >= 25.1 understands dependency groups (--group).
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q --upgrade 'pip>=25.1'
	$(PIP) install -q -c constraints.txt -e '.[split]' --group dev
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgesplit demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

codegen: $(STAMP)
	$(BIN)/python -m protos.codegen

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
