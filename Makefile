# The menu of common commands; `make help` lists them, README and docs/ explain them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: help install system-packages lock run migrate seed partner allocations prune-keys prune-notifications sweep-holds cluster test failover image image-test lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(BIN)/ticketboss: pyproject.toml setup.cfg scripts/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c scripts/constraints.txt --upgrade pip
	$(BIN)/pip install --quiet -c scripts/constraints.txt -e '.[test]'
	touch $@

# Redocly's CLI, which lints the OpenAPI document in make test: pinned by its lock file.
OPENAPI_LINT := scripts/openapi/node_modules/.bin/redocly
$(OPENAPI_LINT): scripts/openapi/package.json scripts/openapi/package-lock.json
	npm ci --prefix scripts/openapi --no-audit --no-fund --loglevel=error
	touch $@

install: $(BIN)/ticketboss $(OPENAPI_LINT) system-packages  ## create .venv and install the project with its test tools, pinned by scripts/constraints.txt (and scripts/openapi's lock)

system-packages:  ## the Debian packages the tests and make cluster run for real (pgbouncer, haproxy, patroni, etcd-server), installed where missing
	@scripts/system-packages.sh

lock:  ## re-resolve pyproject.toml's ranges in a scratch venv and rewrite scripts/constraints.txt
	rm -rf var/lock-venv && $(PYTHON) -m venv var/lock-venv
	var/lock-venv/bin/pip install --quiet --upgrade pip
	var/lock-venv/bin/pip install --quiet -e '.[test,bench]'
	{ sed -n '1,2p' scripts/constraints.txt; var/lock-venv/bin/pip freeze --all --exclude-editable \
	  | grep -v -e '^ticketboss' -e '^setuptools=='; } > var/constraints.new && mv var/constraints.new scripts/constraints.txt
	rm -rf var/lock-venv

migrate: install  ## apply the alembic migrations to DATABASE_URL
	$(BIN)/ticketboss migrate

seed: migrate  ## create the default event if absent (ARGS="--seats 1000 --reset" to change it)
	$(BIN)/ticketboss seed $(ARGS)

run: migrate  ## migrate, seed if absent, then serve with gunicorn on 127.0.0.1:$PORT (8000)
	$(BIN)/ticketboss seed
	WEBHOOK_SECRET_KEYS="$${WEBHOOK_SECRET_KEYS:-$$($(BIN)/ticketboss webhooks local-key)}" \
		exec $(BIN)/gunicorn -c python:ticketboss.gunicorn_conf ticketboss.wsgi:app

partner: install  ## partner API keys: ARGS="create <partnerId> [--operator]", "list", "revoke <key-id>"
	@$(BIN)/ticketboss migrate >&2
	@$(BIN)/ticketboss partner $(ARGS)

allocations: install  ## partners' shares of an event: ARGS="set gala acme 30 --overflow [--max-held N]", "list gala", "delete gala acme"
	@$(BIN)/ticketboss migrate >&2
	@$(BIN)/ticketboss allocations $(ARGS)

prune-keys: migrate  ## delete expired Idempotency-Keys (cron it, e.g. hourly)
	$(BIN)/ticketboss prune-keys

prune-notifications: migrate  ## delete notifications older than NOTIFICATION_RETENTION_DAYS (cron it, e.g. daily)
	$(BIN)/ticketboss prune-notifications

sweep-holds: migrate  ## mark lapsed holds expired (tidiness only; the service also does it every HOLD_SWEEP_SECONDS)
	$(BIN)/ticketboss holds sweep

cluster: install  ## pgbouncer, N gunicorn hosts and HAProxy on loopback until Ctrl-C (ARGS="--hosts 3 --port 8080"; --ha: three PostgreSQL nodes under Patroni)
	PYTHONPATH=scripts exec $(BIN)/python -m cluster $(ARGS)

test: install  ## the whole suite against a fresh PostgreSQL database (TEST_DATABASE_URL)
	$(BIN)/pytest $(ARGS)

failover: install  ## the failover drill: four faults on a Patroni cluster under keyed load, each checked and reported
	$(BIN)/pytest -m failover -s $(ARGS) tests/failover

image: system-packages  ## build the container image ticketboss:latest with buildah (BASE=python:3.11-slim, else a base built from Debian's packages; docs/image.md)
	scripts/image/build.sh

image-test: install image  ## run the image as deployed: one-off commands, serve, reserve, cancel, SIGTERM drain, read-only root
	$(BIN)/pytest -m image -s tests/image $(ARGS)

lint: install  ## ruff (the rules and formatting of pyproject.toml) and mypy over src/
	$(BIN)/ruff check src tests scripts migrations
	$(BIN)/ruff format --check src tests scripts migrations
	$(BIN)/mypy

bench: install  ## load-test the service on a fresh PostgreSQL database (ARGS="--scenario hot --duration 10")
	$(BIN)/python -c 'import matplotlib' 2>/dev/null && test -x $(BIN)/py-spy || $(BIN)/pip install -q -c scripts/constraints.txt -e '.[test,bench]'
	PYTHONPATH=scripts $(BIN)/python -m bench $(ARGS)

clean:  ## remove the virtualenv, the SQLite file and caches
	rm -rf $(VENV) var .pytest_cache .hypothesis src/*.egg-info scripts/openapi/node_modules
