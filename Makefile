# hookstream — every workflow is a make target; the venv lives in .venv.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# Kafka nodes of `make kafka` and `make chaos`: 1, or 3 for a replicated cluster.
BROKERS ?= 1
# Workers of `make test` (pytest-xdist), a file per worker at a time: each starts a broker and
# a PostgreSQL of its own. TEST_WORKERS= runs the suite in this process alone.
TEST_WORKERS ?= -n 2 --dist loadfile
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: help venv provision kafka kafka-stop topics postgres run demo lint test unit integration clean bench chaos

help:
	@echo "make run          venv + local Kafka + topics + every service (dev API key: dev-admin-key)"
	@echo "make demo         run + two receivers, sample events, retries; prints the delivery log"
	@echo "make test         install what the tests need if missing, lint (ruff, mypy), the whole suite"
	@echo "make kafka        start the local single-node Kafka broker (kafka-stop stops it); BROKERS=3 a cluster"
	@echo "make topics       create hookstream's topics on the configured broker"
	@echo "make postgres     start a local PostgreSQL on 5432 (Debian packages), e.g. for make run"
	@echo "make lint         ruff + mypy"
	@echo "make chaos        kill -9 services and the broker under load; checks nothing is lost (~6 min)"
	@echo "                  BROKERS=3: on a three-node cluster, killing the busiest node, then the controller"
	@echo "make bench        the benchmark (issue 7), ~8 min; BENCH_ARGS=--quick for ~2 min"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

kafka: venv
	$(BIN)/hookstream kafka start --brokers $(BROKERS)

kafka-stop: venv
	$(BIN)/hookstream kafka stop

topics: venv
	$(BIN)/hookstream topics create

postgres:
	bash deploy/dev/postgres.sh

# DEVELOPMENT ONLY: unless already set, the API accepts the admin key `dev-admin-key` and
# webhooks may target loopback addresses (for `hookstream receiver`). Never use these defaults
# in a deployment.
run: kafka topics
	HOOKSTREAM_API_KEYS="$${HOOKSTREAM_API_KEYS:-dev-admin-key:*}" \
	HOOKSTREAM_ALLOW_PRIVATE_TARGETS="$${HOOKSTREAM_ALLOW_PRIVATE_TARGETS:-127.0.0.0/8}" \
	$(BIN)/hookstream run all

# DEVELOPMENT ONLY, like run: the demo's own API (a free loopback port) takes dev-admin-key and
# its webhooks target loopback receivers. It starts the local broker unless one is configured or
# running, and stops every process it started except the broker.
demo: venv
	$(BIN)/hookstream demo

lint: venv
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy

# Java, Maven, Chromium and PostgreSQL's server binaries from Debian's packages when missing,
# one line each; the test session starts its own broker and its own PostgreSQL from them.
provision:
	bash deploy/dev/provision.sh

test: provision lint
	@$(BIN)/python -c 'from hookstream.tools import localkafka; localkafka.check_java(); print("tests: Kafka jars in", localkafka.resolve())'
	$(BIN)/pytest -q $(TEST_WORKERS)

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv
	$(BIN)/pytest -q tests/integration

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# The benchmark starts its own broker (unless HOOKSTREAM_KAFKA_BOOTSTRAP_SERVERS is set) and
# its own nginx (installed from Debian's packages when missing); see bench/README.md.
# e.g. make bench BENCH_ARGS="--quick --stage sender"
bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

# The chaos suite (issue 6) on a broker of its own; the store is PostgreSQL (a throwaway
# cluster, as in make test). e.g. make chaos CHAOS_ARGS="--events 5000 --kill-every 4";
# make chaos BROKERS=3 runs it on a three-node cluster with replication factor 3.
chaos: venv provision
	$(BIN)/python -m tests.chaos --brokers $(BROKERS) $(CHAOS_ARGS)
