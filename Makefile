# SASRec on Kubeflow. `make help` lists the targets.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
PIPELINE_YAML ?= build/sasrec_pipeline.yaml

.DEFAULT_GOAL := help
.PHONY: help install run test lint format compile-pipeline clean wheels images push \
	compose-run compose-down run-docker submit test-docker test-docker-run

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

lint: install ## Check formatting and lint with ruff, the Dockerfile with hadolint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/hadolint docker/Dockerfile

format: install ## Format and fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

compile-pipeline: install ## Compile the KFP pipeline to build/sasrec_pipeline.yaml
	$(BIN)/python -m pipelines.compile $(PIPELINE_YAML)

# --- Images, docker compose, Kubeflow -----------------------------------------------------
# Image names: components/images.py, from IMAGE_REGISTRY and IMAGE_TAG (default: the version).
export IMAGE_REGISTRY IMAGE_TAG
IMAGE_STEPS := download sequences train evaluate
TORCH_STEPS := train evaluate
image = $$($(BIN)/python -m components.images $(1))
# build/wheels/ with wheels in it (`make wheels`) makes image builds offline.
PIP_INSTALL_ARGS = $(if $(wildcard build/wheels/*.whl),--no-index,)
COMPOSE ?= $(shell docker compose version > /dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_PROJECT ?= sasrec
COMPOSE_FILES := -f docker/compose.yaml $(if $(COMPOSE_GPU),-f docker/compose.gpu.yaml,)
MLFLOW_PORT ?= 5000
export MLFLOW_PORT
COMPOSE_ENV = SASREC_DOWNLOAD_IMAGE=$(call image,download) SASREC_SEQUENCES_IMAGE=$(call image,sequences) \
	SASREC_TRAIN_IMAGE=$(call image,train) SASREC_EVALUATE_IMAGE=$(call image,evaluate)

wheels: install ## Put every package the images need into build/wheels/ (offline image builds)
	$(BIN)/pip wheel -q -w build/wheels '.[train]' setuptools
	rm -f build/wheels/sasrec-*.whl

images: install ## Build the four step images (names from IMAGE_REGISTRY and IMAGE_TAG)
	mkdir -p build/wheels
	@set -e; for step in $(IMAGE_STEPS); do \
		extras=$$(case " $(TORCH_STEPS) " in *" $$step "*) echo train;; esac); \
		image=$$($(BIN)/python -m components.images $$step); \
		echo "building $$image"; \
		docker build --quiet -f docker/Dockerfile -t $$image \
			--build-arg STEP=$$step --build-arg EXTRAS=$$extras \
			--build-arg VERSION=$$($(BIN)/python -c 'from importlib.metadata import version; print(version("sasrec"))') \
			--build-arg REVISION=$$(git rev-parse HEAD 2> /dev/null || true) \
			--build-arg PIP_INSTALL_ARGS="$(PIP_INSTALL_ARGS)" . ; \
	done
	@docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep sasrec-

push: install ## Push the four step images to IMAGE_REGISTRY
	@test -n "$(IMAGE_REGISTRY)" || { echo "set IMAGE_REGISTRY, e.g. make push IMAGE_REGISTRY=ghcr.io/you"; exit 2; }
	@set -e; for step in $(IMAGE_STEPS); do docker push $$($(BIN)/python -m components.images $$step); done

compose-run: install ## Run the pipeline with docker compose (SOURCE, KCORE, HPARAMS; COMPOSE_GPU=1 for GPUs)
	$(COMPOSE_ENV) $(COMPOSE) -p $(COMPOSE_PROJECT) $(COMPOSE_FILES) run --rm evaluate
	@echo "MLflow UI: http://localhost:$(MLFLOW_PORT) (make compose-down stops it)"

compose-down: ## Stop the compose services (the MLflow server); ARGS=--volumes also drops the data
	$(COMPOSE_ENV) $(COMPOSE) -p $(COMPOSE_PROJECT) -f docker/compose.yaml down $(ARGS)

run-docker: install ## Run the KFP pipeline with kfp.local.DockerRunner on the images, MLflow from compose
	$(COMPOSE_ENV) $(COMPOSE) -p $(COMPOSE_PROJECT) -f docker/compose.yaml up -d mlflow
	MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) \
		$(BIN)/sasrec run --runner docker --output-dir outputs/docker $(ARGS)
	@echo "MLflow UI: http://localhost:$(MLFLOW_PORT) (make compose-down stops it)"

submit: compile-pipeline ## Submit a run to Kubeflow: KFP_HOST, KFP_NAMESPACE, KFP_EXPERIMENT, KFP_RUN_NAME; ARGS="--param NAME=VALUE ..."
	$(BIN)/python -m pipelines.submit --package $(PIPELINE_YAML) $(ARGS)

test-docker: install ## Build the images and run the pipeline in them on a real Docker engine (started when needed)
	docker/with-engine.sh $(MAKE) wheels images test-docker-run

test-docker-run: install
	$(BIN)/pytest -m docker tests/docker $(PYTEST_ARGS)

clean: ## Remove build outputs (keeps .venv)
	rm -rf build outputs local_outputs .pytest_cache .ruff_cache
