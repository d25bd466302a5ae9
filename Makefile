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

# recbole's wheel, whose dataset_example/ml-100k is the bundled dataset: downloaded, never installed;
# recsys_tasks.data.sources.bundled_dir() extracts the files from it once (RECSYS_DATA_DIR moves it).
DATA_DIR := $(or $(RECSYS_DATA_DIR),$(VENV)/share/recsys-tasks)

.PHONY: install run test lint typecheck-py312 test-py312 bench bench-scale ui clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# requirements.txt: the runtime lock; requirements-dev.txt: it plus tests, lint and types.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip download --quiet --no-deps recbole==1.2.1 -d $(DATA_DIR)
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
test: lint
	$(ENV) $(BIN)/python -m pytest -q -m "not gpu" $(PYTEST_ARGS)

# Lint, format, types and the import contracts of .importlinter, in that order (`make test` runs them first).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy recsys_tasks
	$(ENV) $(BIN)/lint-imports

# The package type-checked against Python 3.12's standard library (the tests run on 3.11 only: torch 2.13.0
# has a CPU wheel here for 3.11 alone, and PyPI's 3.12 build brings ~1.35 GB of CUDA wheels).
typecheck-py312: install
	$(BIN)/mypy --python-version 3.12 --cache-dir .mypy_cache/py312 recsys_tasks

# Python 3.12: the tests that need no torch, MLflow or Airflow, in a venv of their own (.venv312); the others run
# on 3.11 only, for the reason above.
# (pyenv's shim answers only for its global version, so its 3.12 is looked up by path)
PYTHON312 ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12) \
	$(shell command -v python3.12 2>/dev/null))
PY312_TESTS := config content_map dataset docker evaluation extract fusion kg metrics promotion reasons report \
	slices sources split ui_launcher validate
ifeq ($(PYTHON312),)
test-py312:
	@echo "note: no Python 3.12 interpreter here; the 3.12 tests are skipped"
else
test-py312: install
	$(PYTHON312) -m venv .venv312
	.venv312/bin/pip install --quiet -r requirements-py312.txt
	.venv312/bin/pip install --quiet --no-deps -e .
	$(ENV) RECSYS_DATA_DIR=$(abspath $(DATA_DIR)) .venv312/bin/python -m pytest -q -p no:cacheprovider \
		-m "not slow and not e2e" $(PY312_TESTS:%=tests/test_%.py)
endif

bench: install
	$(ENV) $(BIN)/python bench/bench_pipeline.py

# The whole workflow on generated data at 1M, 5M and 25M interactions (per stage: seconds, peak RSS, growth
# exponent; slice metrics), beside LightFM, ALS and popularity in their own environment (bench/requirements-peers.txt).
# SCALE_ARGS e.g. --sizes 50k,200k --stage-timeout 1800 (bench/bench_scale.py --help).
SCALE_ARGS ?=
PEERS_VENV := bench/out/peers-venv
$(PEERS_VENV)/.installed: bench/requirements-peers.txt
	$(PYTHON) -m venv $(PEERS_VENV) || python3 -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet "pip<25" setuptools wheel
	$(PEERS_VENV)/bin/pip install --quiet -r bench/requirements-peers.txt
	$(PEERS_VENV)/bin/pip install --quiet --no-use-pep517 lightfm==1.17
	touch $@

bench-scale: install $(PEERS_VENV)/.installed
	$(ENV) $(BIN)/python bench/bench_scale.py --peers $(PEERS_VENV)/bin/python --workdir bench/out/scale $(SCALE_ARGS)

# The model beside LightFM, cornac (EASE, BPR, VBPR) and implicit (ALS, BPR), each tuned on the finetune's
# validation users, on MovieLens-100K and the protocol's own slices, over split seeds 42-48 (47 and 48 never used
# for tuning): a table per seed, the mean with a 95% t-interval, bench/out/peers_ml100k.md. About an hour on 2 cores.
# PEERS_ARGS e.g. --seeds 42 43 --peers ease,als (bench/bench_peers.py --help).
PEERS_ARGS ?=
.PHONY: bench-peers
bench-peers: install $(PEERS_VENV)/.installed
	$(ENV) OMP_NUM_THREADS=1 $(BIN)/python bench/bench_peers.py --peers-python $(PEERS_VENV)/bin/python \
		--workdir bench/out/peers $(PEERS_ARGS)

# Airflow (api-server, scheduler, dag-processor, triggerer), mlflow server and recsys serve until Ctrl-C;
# UI_ARGS e.g. --airflow-port 8081 --mlflow-port 5001 --serve-port 8001 --no-serve (scripts/ui.py --help).
UI_ARGS ?=
ui: install
	$(ENV) $(BIN)/python scripts/ui.py $(UI_ARGS)

clean:
	rm -rf .airflow .recsys
