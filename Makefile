# compute-exchange: `make` lists the targets.
# Real services for the tests: infra/services.sh (Kafka from Maven Central, the installed
# PostgreSQL), see README. Nothing here needs Docker.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Tests wait on Kafka and PostgreSQL much of the time, and each has its own topics, database
# and ports, so two processes (a file each, its fixtures built once) share the two cores well.
TEST_WORKERS ?= 2
WEB_VENDOR := api/web/vendor
PACKAGES := exchange matching settlement api simulations cx client/cx_client

.PHONY: help venv compile web chromium fonts pg-auto-failover lint migration test soak fuzz demo bench simulate services-up services-down services-status failover cluster-up cluster-down clean distclean

help: ## list the targets
	@echo "usage: make TARGET"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'
	@echo "variables: PYTEST_ARGS='-k name -x' (test), PYTHON=$(PYTHON) (venv),"
	@echo "           FUZZ_SECONDS=3600 or FUZZ_EXAMPLES=N, FUZZ_STEPS, FUZZ_BACKEND=real (fuzz)"

venv: $(VENV)/.installed $(WEB_VENDOR)/.built compile ## create .venv and install the project with dev tools and the sim extra (again only when pyproject.toml changes), the page's libraries and the compiled engine

$(VENV)/.installed: pyproject.toml client/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,sim]' -e ./client
	@touch $@

# The engine's modules compiled with mypyc into matching/_mypyc, and the domain's folding modules
# into exchange/domain/_mypyc (both gitignored), again only when their sources change. Without a
# C compiler or Python headers, or if a build fails, it says why and exits 0: that package runs
# as its pure-Python modules (matching/native.py says how each chooses).
compile: $(VENV)/.installed ## compile the matching engine and the domain's folding modules with mypyc (pure Python where it cannot; CX_PURE_PYTHON=1 forces pure Python)
	$(BIN)/python infra/compile_engine.py

web: $(WEB_VENDOR)/.built ## the page's libraries (chart.js, i18next) from npm, pinned by web/package-lock.json, copied into the package

# npm resolves the lockfile at build time; the copies ship inside the Python package, so the page
# needs no network when it runs. The copies are build output (gitignored), remade when the lock changes.
$(WEB_VENDOR)/.built: web/package.json web/package-lock.json
	npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(WEB_VENDOR) && mkdir -p $(WEB_VENDOR)
	cp web/node_modules/chart.js/dist/chart.umd.min.js $(WEB_VENDOR)/chart.umd.min.js
	cp web/node_modules/chart.js/LICENSE.md $(WEB_VENDOR)/chart.js-LICENSE.md
	cp web/node_modules/i18next/dist/umd/i18next.min.js $(WEB_VENDOR)/i18next.min.js
	cp web/node_modules/i18next/LICENSE $(WEB_VENDOR)/i18next-LICENSE
	@touch $@

chromium: ## Debian's chromium for the browser test (installed only when /usr/bin/chromium is missing; needs root)
	@test -x /usr/bin/chromium || { apt-get update && apt-get install -y chromium; }

fonts: ## Debian's WenQuanYi Micro Hei, embedded in the PDF statements and reports (installed only when missing; needs root)
	@test -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc || { apt-get update && apt-get install -y fonts-wqy-microhei; }

lint: venv ## ruff, mypy and the import-linter contracts
	$(BIN)/ruff check .
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/lint-imports

migration: venv ## write a new migration from what changed in the tables (MESSAGE="what changes"), to read and edit
	$(BIN)/python -m cx.migrations "$(MESSAGE)"

test: lint chromium fonts ## lint, then the whole test suite against real Kafka and PostgreSQL, in TEST_WORKERS (2) processes, a test file each at a time (PYTEST_ARGS=...)
	infra/with-services.sh $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --ignore=tests/failover $(PYTEST_ARGS)

soak: venv ## the memory soak test alone, ten minutes (CX_SOAK_SECONDS=... to change)
	CX_SOAK_SECONDS=$${CX_SOAK_SECONDS:-600} $(BIN)/pytest -q -s tests/e2e/test_soak.py

fuzz: venv ## the whole-system model test at random for FUZZ_SECONDS (600) or FUZZ_EXAMPLES, FUZZ_STEPS (100) steps each
	$(BIN)/python -m tests.system.fuzz

demo: venv ## the market running in one process, nothing else needed
	$(BIN)/cx demo

bench: venv ## every benchmark, one JSON line each (starts Kafka and PostgreSQL like test)
	$(BIN)/cx bench matching
	$(BIN)/cx bench api
	$(BIN)/cx bench fanout
	$(BIN)/cx bench horizon
	infra/with-services.sh sh -c '$(BIN)/cx bench e2e && $(BIN)/cx bench e2e --matching-processes 2 && $(BIN)/cx bench replay'

simulate: venv ## agent-based market simulation with its report
	$(BIN)/cx simulate

services-up: ## start local Kafka (127.0.0.1:19092) and PostgreSQL (127.0.0.1:55432); then `. .cache/services.env`
	infra/services.sh up

services-down: ## stop the local Kafka and PostgreSQL
	infra/services.sh down

services-status: ## are the local Kafka and PostgreSQL running
	-infra/services.sh status

# The cluster's own addresses, whatever the caller's environment names.
CLUSTER := env -u KAFKA_BOOTSTRAP_SERVERS -u DATABASE_URL -u CX_SETTLEMENT_SHARDS CX_SERVICES_MODE=cluster

pg-auto-failover: ## Debian's pg_auto_failover for the failover suite (installed only when missing; needs root)
	@{ test -x /usr/bin/pg_autoctl && test -f /usr/share/postgresql/15/extension/pgautofailover.control; } || { apt-get update && apt-get install -y pg-auto-failover-cli postgresql-15-auto-failover; }

failover: venv pg-auto-failover ## the failover suite (tests/failover) on a three-node Kafka cluster and, per settlement shard, a PostgreSQL primary and standby under one pg_auto_failover monitor, started for it and stopped after (a few minutes)
	$(CLUSTER) infra/with-services.sh $(BIN)/pytest -q tests/failover $(PYTEST_ARGS)

cluster-up: ## start the local cluster (Kafka 127.0.0.1:19192,19194,19196; PostgreSQL shard 0 on 55533/55534, shard 1 on 55535/55536, monitor 55532); then `. .cache/cluster.env`
	$(CLUSTER) infra/services.sh up

cluster-down: ## stop the local cluster
	$(CLUSTER) infra/services.sh down

clean: ## remove caches and build output (keeps .venv, the downloaded Kafka in .cache and the demo history)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist reports matching/_mypyc exchange/domain/_mypyc
	find . -path ./.venv -prune -o -path ./.cache -prune -o \
		\( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 | xargs -0 rm -rf

distclean: services-down clean ## also remove .venv, .cache (Kafka jars, databases) and the demo history in .cx-data
	rm -rf $(VENV) .cache .cx-data web/node_modules $(WEB_VENDOR)
