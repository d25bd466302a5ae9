# Two commands do everything on a fresh machine:
#   make run    the whole workflow through Airflow on the embedded default (bundled data,
#               bundled text model, SQLite for Airflow and MLflow), then the evaluation table
#   make test   the test suite (what CI runs through .ci/run)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ENV := source scripts/env.sh &&
PYTEST_ARGS ?=

.PHONY: install run test test-all bench airflow-ui mlflow-ui clean

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
	$(ENV) $(BIN)/python dags/recsys_cold_start.py 2> >(grep -v -E 'it/s\]|batch/s\]|epoch/s\]|triple/s\]' >&2)
	@echo
	@echo "Artifacts:        $$PWD/.recsys/runs/"
	@echo "MLflow UI:        make mlflow-ui   (then http://127.0.0.1:5000)"
	@echo "Airflow UI:       make airflow-ui  (then http://localhost:8080)"
	@echo "Recommendations:  source scripts/env.sh && $(BIN)/recsys recommend --requests examples/requests.jsonl"

# `distributed` runs too: CeleryExecutor on the local Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379),
# skipped (with the reason) where they are unreachable.
test: install
	$(ENV) $(BIN)/python -m pytest -q -m "not gpu and not browser" $(PYTEST_ARGS)

bench: install
	$(ENV) $(BIN)/python bench/bench_pipeline.py

airflow-ui: install
	$(ENV) $(BIN)/airflow standalone

mlflow-ui: install
	$(ENV) $(BIN)/mlflow ui --backend-store-uri "sqlite:///$$RECSYS_WORKDIR/mlflow.db" --host 127.0.0.1 --port 5000

clean:
	rm -rf .airflow .recsys
