# The two set-up commands: `make demo` (serve the demo model and generate an image) and
# `make test` (lint, types, the whole test suite). Both build the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test lint typecheck pytest stubs clean node-deps buf gen node web node-test

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

pytest: install system-deps web
	$(BIN)/pytest

test: lint typecheck buf pytest node-test

stubs: install
	$(BIN)/python clients/python/scripts/generate_stubs.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# --- Other languages, the Node client and the browser page (npm tools: package.json) ---------
NODE_STAMP := node_modules/.installed
NODE_BIN := node_modules/.bin

$(NODE_STAMP): package.json package-lock.json clients/node/package.json | system-deps
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 with npm"; exit 1; }
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

node-deps: $(NODE_STAMP)

# buf lint (STANDARD) and buf breaking (FILE) against the main branch.
buf: node-deps
	bash scripts/buf-check.sh

# Go, Java, Python and TypeScript clients in build/gen/<language>, with local plugins only.
gen: node-deps system-deps
	$(NODE_BIN)/buf generate

# The Node client: its TypeScript stubs, compiled with tsc.
node: node-deps
	$(NODE_BIN)/buf generate --template clients/node/buf.gen.yaml
	rm -rf clients/node/dist
	cd clients/node && ../../$(NODE_BIN)/tsc -p .

# The browser page's script, bundled with the generated stubs and Connect's web transport.
web: node
	$(NODE_BIN)/tsc -p clients/web
	$(NODE_BIN)/esbuild clients/web/src/app.ts --bundle --format=esm --target=es2022 \
		--outfile=clients/web/dist/app.js --log-level=warning

# The Node client's tests (node --test) against a real demo server that they start.
node-test: node install
	cd clients/node && POINTILLIST_BIN=$(abspath $(BIN))/pointillist npm test
