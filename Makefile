# The two commands of the README: `make demo` (the main job on the embedded default) and `make test`.
PY ?= python3
export SECURELINK_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: bootstrap testbed test lint unit demo

bootstrap:
	bash scripts/bootstrap

testbed: bootstrap
	bash scripts/asterisk-testbed up

lint: bootstrap
	$(PY) -m ruff check asterisk_securelink tests alembic bench
	$(PY) -m ruff format --check asterisk_securelink tests alembic bench
	$(PY) -m mypy

# everything: lint, unit and store tests (SQLite + PostgreSQL), end-to-end tests on the real Asterisk testbed
test: lint testbed
	$(PY) -m pytest -q -p no:cacheprovider

unit: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider -m "not e2e"

demo: testbed
	$(PY) scripts/demo.py
