# ATB: one entry point for developers and CI.
#
# `make test` works on a fresh clone with only java (17+), mvn, go and python3.11
# installed: it makes the venv, resolves the Kafka jars and builds OPA into .cache/,
# starts the local stack (`atb dev up`) and runs pytest. Everything built or run
# lives in .venv/, .cache/ and .state/ (all git-ignored).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.atb-installed
CACHE_DIR := $(or $(ATB_CACHE_DIR),$(CURDIR)/.cache)
OPA := $(CACHE_DIR)/bin/opa
AMTOOL := $(CACHE_DIR)/bin/amtool
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# mypy refuses a folder without Python files: pass only the ones that have some.
MYPY_TARGETS = $(shell for d in contracts atb services tests bench; do \
	[ -n "$$(find $$d -name '*.py' -print -quit 2>/dev/null)" ] && echo $$d; done)

# pytest exits 5 when it collected no test: a run that tested nothing is a failure.
define run_pytest
	rc=0; $(BIN)/pytest $(1) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	exit $$rc
endef

.PHONY: help venv tools infra demo test soak policy-gates lint bench down clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(VENV_STAMP) ## create .venv from requirements.lock and install the project (editable)

$(VENV_STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install Python 3.11" >&2; exit 2; }
	@echo "==> venv: $(VENV) ($(PYTHON)), requirements.lock"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -e .
	@touch $@

tools: venv ## resolve the Kafka jars (mvn) and build OPA (go) into .cache/, start nothing
	$(BIN)/atb dev tools

infra: venv ## start Kafka + OPA locally (idempotent, fast when already up)
	$(BIN)/atb dev up

demo: venv ## run the demo
	$(BIN)/atb demo

test: venv infra ## run every test except the soak tests against the local stack
	@$(call run_pytest,-m "not soak" $(PYTEST_ARGS))

soak: venv infra ## run the large-scale fault-injection tests
	@$(call run_pytest,-m soak -s $(PYTEST_ARGS))

policy-gates: venv tools ## the policy's CI gates: opa test, opa check --strict, regal lint, coverage >= 90%
	$(OPA) test -v opa/policy
	$(OPA) check --strict opa/policy
	$(CACHE_DIR)/bin/regal lint --config-file .regal/config.yaml opa/policy
	$(BIN)/atb policy coverage --policy-dir opa/policy --threshold 90

lint: venv tools policy-gates ## ruff, mypy, import contracts, the policy gates, alert rules and routes, the chart, compose
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(MYPY_TARGETS)
	$(BIN)/lint-imports
	@command -v promtool >/dev/null || { echo "lint: promtool not found (apt-get install prometheus)" >&2; exit 2; }
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml
	promtool check config deploy/prometheus/prometheus.yml
	$(CACHE_DIR)/bin/helm lint --strict deploy/helm/atb && for v in deploy/helm/atb/values.yaml deploy/helm/atb/examples/values-production.yaml; do $(CACHE_DIR)/bin/helm template atb deploy/helm/atb -f $$v | $(CACHE_DIR)/bin/atb-kube-validate - || exit 1; done
	$(AMTOOL) check-config deploy/alertmanager/alertmanager.yml
	@grep -v '^#' deploy/alertmanager/routes_test.txt | while read -r receivers labels; do \
		[ -n "$$receivers" ] || continue; \
		$(AMTOOL) config routes test --config.file=deploy/alertmanager/alertmanager.yml \
			--verify.receivers="$$receivers" $$labels >/dev/null \
			|| { echo "lint: alert route of '$$labels' is not $$receivers" >&2; exit 1; }; \
	done; echo "deploy/alertmanager/routes_test.txt: every route as expected"
	@if [ -f docker-compose.yml ]; then \
		command -v docker-compose >/dev/null || { echo "lint: docker-compose not found (apt-get install docker-compose)" >&2; exit 2; }; \
		docker-compose -f docker-compose.yml config -q && echo "docker-compose.yml: ok"; fi

bench: venv infra ## benchmarks (docs/performance.md): end to end closed and open loop, hops, issuer, approvals under a long history, broker, audit ingest, compliance search, restore, scale-out
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/e2e.py --rate 200 --seconds 20
	$(BIN)/python bench/hops.py
	$(BIN)/python bench/poa_issuance.py
	$(BIN)/python bench/approvals_held.py
	$(BIN)/python bench/broker_decisions.py
	$(BIN)/python bench/audit_ingest.py
	$(BIN)/python bench/console_search.py
	$(BIN)/python bench/restore.py
	$(BIN)/python bench/scale.py

down: ## stop the local stack (only what `atb dev up` started)
	@if [ -x $(BIN)/atb ]; then $(BIN)/atb dev down; else echo "down: no venv, nothing to stop"; fi

clean: down ## stop the stack, delete its state (.state/: Kafka data, keys, DBs) and tool caches
	rm -rf .state build .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
	find . -path ./.venv -prune -o -name '*.egg-info' -prune -exec rm -rf {} + -o -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## also delete .venv and .cache (jars, OPA): the next make starts from scratch
	rm -rf $(VENV) .cache
