# Two entry points that set up a fresh machine themselves: `make demo` and `make test`.
# Python >= 3.11 is required; Docker is installed and started by .ci/docker-up where allowed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup docker clean

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

test: setup docker
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .awm build
