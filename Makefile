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

.PHONY: help setup venv dagster-home demo test test-unit lint dev \
	kafka-start kafka-stop kafka-status compose-config setup-ui

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
# constraints.txt pins every transitive package to the versions the tests ran with.
$(INSTALL_STAMP): pyproject.toml constraints.txt | $(VENV_PY)
	@$(VENV_PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
		echo "error: $(VENV) is not Python 3.11: delete it and run make setup again" >&2; \
		exit 1; }
	$(VENV_PY) -m pip install --disable-pip-version-check --no-input -c constraints.txt -e '.[dev]'
	@touch $@

# DAGSTER_HOME must exist; its dagster.yaml follows the repository's copy.
dagster-home:
	@mkdir -p "$(DAGSTER_HOME)"
	@cmp -s dagster.yaml "$(DAGSTER_HOME)/dagster.yaml" \
		|| cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

demo: setup ## run the pipeline end to end (starts and stops its own Kafka broker)
	$(FRAUD_ASSETS) --home "$(CURDIR)" demo

test: setup setup-ui ## unit + integration tests (the tests start their own broker)
	$(VENV_PY) -m pytest

test-unit: setup ## unit tests only (no broker)
	$(VENV_PY) -m pytest fraud_assets_tests/unit

lint: venv ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The UI test renders the Dagster UI in headless Chromium (fraud_assets_tests/integration/test_ui.py).
CHROMIUM := /usr/bin/chromium

setup-ui: ## headless Chromium for the UI test (Debian package; needs root or sudo)
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then as_root=""; \
	elif command -v sudo > /dev/null 2>&1; then as_root="sudo"; \
	else \
		echo "error: $(CHROMIUM) is missing and installing it needs root: run" \
			"'apt-get install chromium' as root (or install sudo)" >&2; \
		exit 1; \
	fi; \
	if ! command -v apt-get > /dev/null 2>&1; then \
		echo "error: $(CHROMIUM) is missing and this system has no apt-get:" \
			"install Chromium with your package manager so that $(CHROMIUM) exists" >&2; \
		exit 1; \
	fi; \
	echo "Installing chromium (apt-get) for the UI test"; \
	$$as_root apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive $$as_root apt-get install -y -qq chromium > /dev/null; \
	"$(CHROMIUM)" --version

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
