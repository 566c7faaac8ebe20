# The two set-up commands: `make demo` (serve the demo model and generate an image) and
# `make test` (lint, types, the whole test suite). Both build the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test lint typecheck pytest stubs clean

$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: a looser requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e clients/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages some tests need (scripts/system-packages.txt); a no-op when all are present.
system-deps:
	bash scripts/install-system-deps.sh

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install system-deps
	$(BIN)/pytest

test: lint typecheck pytest

stubs: install
	$(BIN)/python clients/python/scripts/generate_stubs.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
