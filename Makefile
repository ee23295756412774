# SASRec on Kubeflow. `make help` lists the targets.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
PIPELINE_YAML ?= build/sasrec_pipeline.yaml

.DEFAULT_GOAL := help
.PHONY: help install run test lint format compile-pipeline clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv with the project, its extras and dev tools (idempotent)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq -e '.[train,dev]'
	touch $@

run: install ## Run the whole pipeline locally (KFP local runner) into outputs/; ARGS="..." adds flags
	$(BIN)/sasrec run --output-dir outputs $(ARGS)

test: install ## Run the tests (Docker and GPU tests are opt-in markers)
	$(BIN)/pytest -m "not docker and not gpu" $(PYTEST_ARGS)

lint: install ## Check formatting and lint with ruff
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install ## Format and fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

compile-pipeline: install ## Compile the KFP pipeline to build/sasrec_pipeline.yaml
	$(BIN)/python -m pipelines.compile $(PIPELINE_YAML)

clean: ## Remove build outputs (keeps .venv)
	rm -rf build outputs local_outputs .pytest_cache .ruff_cache
