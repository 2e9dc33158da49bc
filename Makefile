# UnionHub: `make run` brings the whole stack up; `make test` runs the whole suite on the real broker and store.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# make's own targets (run, test, bench, seed-scale ...) are development tools: they run as development unless the
# caller says otherwise. Every other start (compose, Kubernetes, a bare nameko run) is production and must be given
# a UNIONHUB_SECRET of its own (see SECURITY.md).
export UNIONHUB_ENV ?= development
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run test test-unit lint fuzz bench chaos seed-scale rekey-jobs clean-data

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

run: install
	@$(PY) deploy/run.py

test: install
	@$(PY) deploy/ensure_broker.py
	@$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: install
	@$(PY) -m pytest -q tests/unit

# schemathesis over /openapi.json with and without an admin token, on a stack of its own (FUZZ_EXAMPLES cases per
# operation, FUZZ_SECONDS per run at most): 0 server errors and 0 response-schema violations, or it fails
fuzz: install
	@$(PY) deploy/ensure_broker.py
	@$(PY) tests/fuzz_openapi.py

lint: install
	@$(VENV)/bin/ruff check .

bench: install
	@$(PY) deploy/ensure_broker.py
	@$(PY) -m bench.run_all

chaos: install
	@$(PY) deploy/ensure_broker.py
	@$(PY) -m bench.chaos

seed-scale: install
	@$(PY) -m deploy.seed_scale $(SEED_ARGS)

rekey-jobs: install
	@$(PY) -m services.jobs.rekey

clean-data:
	rm -rf var/store var/log
