# hookstream — every workflow is a make target; the venv lives in .venv.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: help venv kafka kafka-stop topics postgres run lint test unit integration clean

help:
	@echo "make run          venv + local Kafka + topics + every service that exists"
	@echo "make test         lint (ruff, mypy) then the whole pytest suite"
	@echo "make kafka        start the local single-node Kafka broker (kafka-stop stops it)"
	@echo "make topics       create hookstream's topics on the configured broker"
	@echo "make postgres     start a local PostgreSQL (Debian packages) for the store tests"
	@echo "make lint         ruff + mypy"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

kafka: venv
	$(BIN)/hookstream kafka start

kafka-stop: venv
	$(BIN)/hookstream kafka stop

topics: venv
	$(BIN)/hookstream topics create

postgres:
	bash deploy/dev/postgres.sh

run: kafka topics
	$(BIN)/hookstream run all

lint: venv
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv
	$(BIN)/pytest -q tests/integration

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
