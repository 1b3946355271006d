# Two entry points that set up a fresh machine themselves: `make demo` and `make test`
# (`make lint`: ruff, mypy --strict and the import-linter layers; `make test` runs it first).
# Python >= 3.11 is required; Docker is installed and started by .ci/docker-up where allowed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup docker clean k8s-live

$(BIN)/awm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/awm

docker:
	@bash .ci/docker-up

demo: setup docker
	$(BIN)/awm demo examples/

# All three checks run, so one pass shows every finding; any failure fails the target.
lint: setup
	@status=0; \
	$(BIN)/ruff check || status=1; \
	$(BIN)/mypy || status=1; \
	$(BIN)/lint-imports || status=1; \
	exit $$status

test: setup docker lint
	$(BIN)/pytest

# Opt-in, for a person with a cluster (never CI): see tests/k8s/test_live.py for the setup.
k8s-live: setup
	AWM_K8S_LIVE=1 $(BIN)/pytest -p no:cacheprovider -m k8s tests/k8s/test_live.py

clean:
	rm -rf $(VENV) .awm build
