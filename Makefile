# fsincident — `make run` starts the daemon on examples/, `make test` installs and runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= examples

.PHONY: install run check test lint unit bench clean peers screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/fsincident run --config $(CONFIG)

check: $(STAMP)
	$(BIN)/fsincident check --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

peers:
	bash scripts/install-peers.sh

test: $(STAMP) lint
	bash scripts/install-peers.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 4 --dist loadfile --ignore=tests/e2e
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests/e2e

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit tests/config

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

screenshots: $(STAMP)
	bash scripts/install-peers.sh chromium fonts-liberation
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache state
