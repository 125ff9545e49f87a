# fraud_assets: the two commands a newcomer needs are
#
#   make demo    # install what is missing, then run the pipeline end to end
#   make test    # install what is missing, then run the unit and integration tests
#
# Users with Docker can instead run the whole stack (Kafka, Postgres, Dagster webserver,
# daemon and code server) with `docker compose up --build` (see docker-compose.yml).
#
# Every target is safe to re-run. None deletes var/checkpoints: a streaming query's
# checkpoint is its memory of what it already processed.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The interpreter that creates .venv: Python 3.11 (python3 is accepted if it is 3.11).
PYTHON ?= python3.11
# python3 is tried only when PYTHON was not chosen by the user.
PYTHON_CANDIDATES := $(strip $(PYTHON) $(if $(filter file,$(origin PYTHON)),python3))

VENV := .venv
VENV_PY := $(VENV)/bin/python
INSTALL_STAMP := $(VENV)/.installed-from-pyproject
FRAUD_ASSETS := $(VENV)/bin/fraud-assets

# Seen by every recipe (and so by the demo, the tests, Dagster and Spark).
export DAGSTER_HOME := $(CURDIR)/var/dagster_home
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(CURDIR)/$(VENV)/bin/python

.PHONY: help setup venv dagster-home demo test test-live test-unit lint dev live \
	kafka-start kafka-stop kafka-status compose-config setup-ui setup-system \
	chaos chaos-short fuzz bench bench-smoke models

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  make %-15s %s\n", $$1, $$2}'

setup: venv dagster-home ## venv + dependencies, Maven jars, hash-checked dataset (idempotent)
	$(FRAUD_ASSETS) --home "$(CURDIR)" setup

venv: $(INSTALL_STAMP)

$(VENV_PY):
	@py=""; \
	for candidate in $(PYTHON_CANDIDATES); do \
		if command -v "$$candidate" > /dev/null 2>&1 \
			&& "$$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
				> /dev/null 2>&1; then \
			py="$$candidate"; break; \
		fi; \
	done; \
	if [ -z "$$py" ]; then \
		echo "error: fraud_assets needs Python 3.11 and none of [$(PYTHON_CANDIDATES)] is" \
			"Python 3.11: install it, or run make PYTHON=/path/to/python3.11" >&2; \
		exit 1; \
	fi; \
	echo "Creating $(VENV) with $$py"; \
	"$$py" -m venv $(VENV)

# Re-installs only when pyproject.toml or constraints.txt is newer than the stamp.
# Extras: dev (pytest, hypothesis, ruff) and bench (the benchmark's load generator, also used
# by its CI smoke test).
# constraints.txt pins every transitive package to the versions the tests ran with.
$(INSTALL_STAMP): pyproject.toml constraints.txt | $(VENV_PY)
	@$(VENV_PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
		echo "error: $(VENV) is not Python 3.11: delete it and run make setup again" >&2; \
		exit 1; }
	$(VENV_PY) -m pip install --disable-pip-version-check --no-input -c constraints.txt -e '.[dev,bench]'
	@touch $@

# DAGSTER_HOME must exist; its dagster.yaml follows the repository's copy.
dagster-home:
	@mkdir -p "$(DAGSTER_HOME)"
	@cmp -s dagster.yaml "$(DAGSTER_HOME)/dagster.yaml" \
		|| cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

demo: setup ## run the pipeline end to end (starts and stops its own Kafka broker)
	$(FRAUD_ASSETS) --home "$(CURDIR)" demo

test: setup setup-system ## unit + integration tests (the tests start their own broker)
	$(VENV_PY) -m pytest

test-live: setup setup-system ## the live system in a browser (fraud-assets live, ~7 min; not in make test)
	$(VENV_PY) -m pytest -m live fraud_assets_tests/integration/test_live.py

test-unit: setup ## unit tests only (no broker)
	$(VENV_PY) -m pytest fraud_assets_tests/unit

lint: venv ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Debian packages some tests use, by the program they provide:
#   chromium       headless browser of the UI test (integration/test_ui.py)
#   kcat           the outside Kafka client of the interop test (integration/test_kcat.py)
#   docker-compose the compose file parser of unit/test_compose.py (there is no Docker engine)
SYSTEM_PROGRAMS := /usr/bin/chromium /usr/bin/kcat /usr/bin/docker-compose
SYSTEM_PACKAGES := chromium kcat docker-compose

setup-system: ## Debian packages the tests use: chromium, kcat, docker-compose (root or sudo)
	@missing=""; for program in $(SYSTEM_PROGRAMS); do \
		[ -x "$$program" ] || missing="$$missing $$program"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then as_root=""; \
	elif command -v sudo > /dev/null 2>&1; then as_root="sudo"; \
	else \
		echo "error:$$missing missing and installing them needs root: run" \
			"'apt-get install $(SYSTEM_PACKAGES)' as root (or install sudo)" >&2; \
		exit 1; \
	fi; \
	if ! command -v apt-get > /dev/null 2>&1; then \
		echo "error:$$missing missing and this system has no apt-get: install" \
			"$(SYSTEM_PACKAGES) with your package manager" >&2; \
		exit 1; \
	fi; \
	echo "Installing $(SYSTEM_PACKAGES) (apt-get) for the tests"; \
	$$as_root apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive $$as_root apt-get install -y -qq $(SYSTEM_PACKAGES) > /dev/null; \
	for program in $(SYSTEM_PROGRAMS); do [ -x "$$program" ] || { \
		echo "error: $$program still missing after apt-get install" >&2; exit 1; }; done

# Kept for existing habits: the UI test's browser comes with the other system packages.
setup-ui: setup-system

chaos: setup ## fault injection on the full dataset (kill -9, broker outage) -> var/chaos/report.json
	$(FRAUD_ASSETS) --home "$(CURDIR)" chaos

chaos-short: setup ## the CI-sized fault injection (a real-data subset, fewer kills)
	$(FRAUD_ASSETS) --home "$(CURDIR)" chaos --rows 20000 --kills 3 --outage-seconds 10

# Each example is one run of the scoring stream over 10,000 messages (about 30 s here, 120 s
# allowed), plus 300 s for the session's broker and Spark to start: the per-test timeout grows
# with the count, so a long run is not cut short and a hang still fails.
FUZZ_EXAMPLES ?= 20
FUZZ_SECONDS_PER_EXAMPLE := 120

fuzz: setup ## the stream fuzz test with FUZZ_EXAMPLES Hypothesis examples (CI runs 1, seeded)
	$(VENV_PY) -m pytest fraud_assets_tests/integration/test_fuzz.py \
		-k ten_thousand_fuzzed_messages --fuzz-examples $(FUZZ_EXAMPLES) \
		--timeout $$(( $(FUZZ_EXAMPLES) * $(FUZZ_SECONDS_PER_EXAMPLE) + 300 ))

bench: setup ## throughput/latency benchmark of three pipelines -> var/bench/report.json
	$(FRAUD_ASSETS) --home "$(CURDIR)" bench

bench-smoke: setup ## the small benchmark variant (shape and correctness, no figures to trust)
	$(FRAUD_ASSETS) --home "$(CURDIR)" bench --smoke

models: setup ## LR, RF, GBT, XGBoost x three protocols (rolling origin: 4 folds, paired), no search -> var/models/comparison.json
	$(FRAUD_ASSETS) --home "$(CURDIR)" models --budget 1

# LIVE_ARGS passes options through, e.g. make live LIVE_ARGS="--port 3001 --rate 500".
LIVE_ARGS ?=

live: setup ## the live system: broker, Dagster UI (:3000) + daemon, supervised stream, paced replay (Ctrl-C stops it)
	$(FRAUD_ASSETS) --home "$(CURDIR)" live $(LIVE_ARGS)

dev: setup ## Dagster UI on http://127.0.0.1:3000
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

kafka-start: setup ## start the embedded Kafka broker (var/kafka) and create the topics
	$(FRAUD_ASSETS) --home "$(CURDIR)" kafka start

kafka-stop: venv ## stop the embedded Kafka broker
	$(FRAUD_ASSETS) --home "$(CURDIR)" kafka stop

kafka-status: venv ## is the embedded Kafka broker running?
	$(FRAUD_ASSETS) --home "$(CURDIR)" kafka status

compose-config: ## validate docker-compose.yml (needs docker-compose or docker compose)
	@if command -v docker-compose > /dev/null 2>&1; then \
		docker-compose -f docker-compose.yml config -q && echo "docker-compose.yml is valid"; \
	elif docker compose version > /dev/null 2>&1; then \
		docker compose -f docker-compose.yml config -q && echo "docker-compose.yml is valid"; \
	else \
		echo "docker-compose is not installed: not validated" \
			"(fraud_assets_tests/unit/test_compose.py still checks its structure)"; \
	fi
