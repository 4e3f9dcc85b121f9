# Two commands on a fresh machine (only python3 and pip needed): `make demo` and `make test`.
# Every install takes its exact versions from constraints.txt; `make lock` refreshes that file.
# pip writes nothing under the user's home (no cache, no version self-check)
export PIP_NO_CACHE_DIR := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# extras to install, e.g. `make install EXTRAS=dev,redis` on a worker host of a multi-host setup
EXTRAS ?= dev

.PHONY: demo test lint format bench chaos install lock clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/listingflow run examples/catalog.csv --sandbox --sandbox-job-seconds 1 --archive archive/demo \
		--sandbox-noncompliant B0D1LMN8QR

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the formatter, the linter and the type checker, as configured in pyproject.toml (CI runs this before the tests)
lint: $(STAMP)
	$(BIN)/ruff format --check
	$(BIN)/ruff check
	$(BIN)/mypy

# rewrite the tree the way `make lint` wants it: lint autofixes (import order, pyupgrade...), then the formatter
format: $(STAMP)
	$(BIN)/ruff check --fix --exit-zero
	$(BIN)/ruff format

chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/flows/test_chaos.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Refresh constraints.txt: resolve pyproject.toml's ranges (all extras) afresh in a temporary venv,
# without the old constraints, and pin what was installed. Then run `make clean test` before committing.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	python3 -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install -q -e '.[dev,redis]'; \
	{ sed -n '/^#/!q;p' constraints.txt; echo; "$$tmp/venv/bin/python" -m pip freeze --exclude-editable; } > "$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" constraints.txt; \
	echo "constraints.txt: $$(grep -c '==' constraints.txt) exact versions"

clean:
	rm -rf $(VENV) .listingflow archive .pytest_cache .mypy_cache .ruff_cache
