# The README's two commands: `make demo` (main job) and `make test` (lint + tests: the product's
# tests/, then research/ and bench/ tests apart, so neither side's tests import the other's).
# Both create .venv/ on first use and install the package into it.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS := dev,train,tflite,onnx,vision
# pyproject.toml gives torch as a range (the [train] extra); reproducible runs use the release
# every result here was made with. The exact pin also keeps pip on a local CPU wheel where one
# is offered (2.13.0+cpu satisfies ==2.13.0), never a newer multi-GB CUDA build.
TORCH := torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: demo test lint install

# the native kernel and the LiteRT shim are built by the install: a change to them re-installs
NATIVE_SOURCES := setup.py $(wildcard kernels/csrc/*) $(wildcard targets/tflite/native/*)

$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' '$(TORCH)'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/climbq demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest research/tests bench/tests
