# Two commands do everything on a fresh machine:
#   make run    the whole workflow through Airflow on the embedded default (bundled data,
#               bundled text model, SQLite for Airflow and MLflow), then the evaluation table
#   make test   the test suite (what CI runs through .ci/run)
# and one to look at it:
#   make ui     Airflow UI, MLflow UI and the serving API on this checkout, URLs and logins printed
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ENV := source scripts/env.sh &&
PYTEST_ARGS ?=

.PHONY: install run test bench ui clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps recbole==1.2.1
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

run: install
	$(ENV) $(BIN)/airflow db migrate >/dev/null
	$(ENV) $(BIN)/python dags/recsys_cold_start.py 2> >(grep -v -E 'it/s\]|batch/s\]|epoch/s\]|triple/s\]|text/s\]' >&2)
	@echo
	@echo "Artifacts:        $$PWD/.recsys/runs/"
	@echo "Airflow + MLflow UIs and the serving API:  make ui"
	@echo "Recommendations:  source scripts/env.sh && $(BIN)/recsys recommend --requests examples/requests.jsonl"

# `distributed` runs too: CeleryExecutor on the local Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379),
# skipped (with the reason) where they are unreachable; so does `browser` (Debian's chromium through
# Playwright), skipped where /usr/bin/chromium is missing. Screenshots: tests/artifacts/ or $PYTEST_ARTIFACTS.
test: install
	$(ENV) $(BIN)/python -m pytest -q -m "not gpu" $(PYTEST_ARGS)

bench: install
	$(ENV) $(BIN)/python bench/bench_pipeline.py

# Airflow (api-server, scheduler, dag-processor, triggerer), mlflow server and recsys serve until Ctrl-C;
# UI_ARGS e.g. --airflow-port 8081 --mlflow-port 5001 --serve-port 8001 --no-serve (scripts/ui.py --help).
UI_ARGS ?=
ui: install
	$(ENV) $(BIN)/python scripts/ui.py $(UI_ARGS)

clean:
	rm -rf .airflow .recsys
