# SASRec on Kubeflow. `make help` lists the targets by group and the variables below.
#? ARGS            flags for `sasrec run` (run, run-docker) or pipelines.submit (submit)
#? PYTEST_ARGS     extra pytest arguments for the test targets
#? VENV, PYTHON    the virtualenv to create (.venv) and the Python that creates it
#? PIPELINE_YAML   where compile-pipeline writes (build/sasrec_pipeline.yaml); SWEEP_PARALLELISM: trials training at once (4)
#? IMAGE_REGISTRY  registry prefix of the step images (empty: local names); IMAGE_TAG: their tag
#? SOURCE, KCORE, HPARAMS  compose-run's source, k-core and hyperparameters
#? SMOKE_DIR, SMOKE_OUT  where smoke writes its synthetic reviews (build/smoke) and its run (outputs/smoke)
#? MLFLOW_UI_PORT  mlflow-ui's port (5000)
#? MODEL, PORT     serve's MLflow model URI (e.g. models:/sasrec-games@champion; serve: the last run's) and port (5001); SERVE_WORKERS (2)
#? COMPOSE_GPU     1: compose-run trains on the host's GPUs; MLFLOW_PORT: compose's MLflow (5000)
#? KFP_HOST, KFP_NAMESPACE, KFP_EXPERIMENT, KFP_RUN_NAME, KFP_TOKEN  submit's Kubeflow endpoint
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
PIPELINE_YAML ?= build/sasrec_pipeline.yaml
LOCK_DIR := docker/requirements

.DEFAULT_GOAL := help
.PHONY: help install mlserver-env serve serve-mlserver mlflow-ui run smoke test test-long lint format compile-pipeline clean wheels images prune-images push lock \
	compose-run compose-down run-docker submit test-servers test-docker test-docker-run

help: ## [local] List the targets by group, and the variables they read
	@awk -F ':.*## ' '/^[a-zA-Z_-]+:.*## \[/ { \
		group = substr($$2, 2, index($$2, "]") - 2); text = substr($$2, index($$2, "]") + 2); \
		lines[group] = lines[group] sprintf("  %-18s %s\n", $$1, text) } \
		/^#\? / { vars = vars "  " substr($$0, 4) "\n" } \
		END { split("local docker cluster development", order, " "); \
		titles["local"] = "Run locally (no Docker)"; titles["docker"] = "Images and docker compose"; \
		titles["cluster"] = "Kubeflow cluster"; titles["development"] = "Development"; \
		for (i = 1; i <= 4; i++) printf "%s:\n%s\n", titles[order[i]], lines[order[i]]; \
		printf "Variables (make VAR=value target):\n%s", vars }' $(MAKEFILE_LIST)

install: $(VENV)/.installed ## [local] Create .venv with the project, its extras and dev tools (idempotent)

# The venv holds the images' locked versions (-c), so tests run what the images run.
$(VENV)/.installed: pyproject.toml $(LOCK_DIR)/train.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq -c $(LOCK_DIR)/train.txt -e '.[train,dev]'
	touch $@

# KServe's MLflow runtime (MLServer) in an environment of its own: see docker/requirements/mlserver.txt.
MLSERVER_VENV := .venv-mlserver
mlserver-env: $(MLSERVER_VENV)/.installed ## [local] Create .venv-mlserver with MLServer and its MLflow runtime (idempotent)

$(MLSERVER_VENV)/.installed: $(LOCK_DIR)/mlserver.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install -qq -r $(LOCK_DIR)/mlserver.txt
	touch $@

MODEL ?=
PORT ?= 5001
SERVE_WORKERS ?= 2
# One torch thread per worker: a request scores a few histories, and workers share the cores.
# Without MODEL: the model of the last `make run` (outputs/), in the MLflow store it used.
serve: install ## [local] Serve MODEL (an MLflow model URI; default: the last `make run`'s) with `mlflow models serve` on 127.0.0.1:PORT
	@MODEL_URI="$(MODEL)"; \
	if [ -z "$$MODEL_URI" ]; then found=$$($(BIN)/python -m sasrec.serving.last_run outputs) || exit 2; \
		eval "$$found"; export MLFLOW_TRACKING_URI; echo "serving $$MODEL_URI from $$MLFLOW_TRACKING_URI"; fi; \
	PATH=$(abspath $(BIN)):$$PATH OMP_NUM_THREADS=1 $(BIN)/mlflow models serve -m "$$MODEL_URI" \
		--env-manager local -h 127.0.0.1 -p $(PORT) -w $(SERVE_WORKERS)

serve-mlserver: install mlserver-env ## [local] Serve MODEL with KServe's MLflow runtime (MLServer, V2 protocol) on 127.0.0.1:PORT
	@test -n "$(MODEL)" || { echo "set MODEL, e.g. make serve-mlserver MODEL=models:/sasrec-games@champion"; exit 2; }
	$(BIN)/python -m sasrec.serving.deploy "$(MODEL)" build/mlserver --port $(PORT)
	PATH=$(abspath $(MLSERVER_VENV)/bin):$$PATH OMP_NUM_THREADS=1 $(MLSERVER_VENV)/bin/mlserver start build/mlserver

MLFLOW_UI_PORT ?= 5000
# The store of local runs, or $MLFLOW_TRACKING_URI's. Open the link `sasrec run` prints under
# "MLflow UI": it lands on training runs (MLflow 3 opens on its GenAI pages otherwise).
mlflow-ui: install ## [local] The MLflow UI on 127.0.0.1:MLFLOW_UI_PORT over the local runs' store
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
		-h 127.0.0.1 -p $(MLFLOW_UI_PORT)

run: install ## [local] Run the whole pipeline locally (KFP local runner) into outputs/; ARGS="..." adds flags
	$(BIN)/sasrec run --output-dir outputs $(ARGS)

SMOKE_DIR ?= build/smoke
SMOKE_OUT ?= outputs/smoke
# Reviews that follow series (bench/synthetic_reviews.py --sequential): an order a model can
# learn, so the run must end with SASRec clearly above both baselines, or the target fails.
smoke: install ## [local] A two-minute end-to-end run on 100,000 synthetic reviews (no download) into outputs/smoke/
	$(BIN)/python bench/synthetic_reviews.py --out $(SMOKE_DIR)/Video_Games.jsonl.gz \
		--reviews 100000 --users 2000 --items 1000 --sequential 0.5
	$(BIN)/sasrec run --source $(SMOKE_DIR)/Video_Games.jsonl.gz --kcore 2 --output-dir $(SMOKE_OUT) \
		--hparams '{"max_epochs": 40}' $(ARGS)
	$(BIN)/python -m sasrec.evaluation.headline $(SMOKE_OUT)/evaluation/metrics.json

test: install mlserver-env ## [development] Run the tests (Docker, MLflow-server, long multi-process and GPU tests are opt-in markers)
	$(BIN)/pytest -m "not docker and not gpu and not server and not long" $(PYTEST_ARGS)

test-servers: install ## [development] Run the tests against real `mlflow server`s (restarts, basic auth)
	$(BIN)/pytest -m server $(PYTEST_ARGS)

test-long: install ## [development] Run the long end-to-end checks: several training processes, jobs killed and rerun
	$(BIN)/pytest -m long $(PYTEST_ARGS)

lint: install ## [development] Check formatting and lint with ruff, the Dockerfile with hadolint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/hadolint docker/Dockerfile

format: install ## [development] Format and fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

compile-pipeline: install ## [cluster] Compile the KFP pipeline to build/sasrec_pipeline.yaml
	$(BIN)/python -m pipelines.compile $(PIPELINE_YAML)

# --- Images, docker compose, Kubeflow -----------------------------------------------------
# Image names: components/images.py, from IMAGE_REGISTRY and IMAGE_TAG (default: the version).
export IMAGE_REGISTRY IMAGE_TAG
IMAGE_STEPS := download sequences train evaluate
TORCH_STEPS := train evaluate
image = $$($(BIN)/python -m components.images $(1))
# Every image the Dockerfile builds, its build stages included, carries this label.
IMAGE_LABEL := org.opencontainers.image.source=https://github.com/sasrec-kubeflow/sasrec
# The step images under the current names (IMAGE_REGISTRY) with a tag other than the current.
older_images = for step in $(IMAGE_STEPS); do image=$(call image,$$step); \
	docker images --format '{{.Repository}}:{{.Tag}}' "$${image%:*}" | grep -vx -e "$$image" -e '.*:<none>'; \
	done
# build/wheels/ with wheels in it (`make wheels`) makes image builds offline.
PIP_INSTALL_ARGS = $(if $(wildcard build/wheels/*.whl),--no-index,)
COMPOSE ?= $(shell docker compose version > /dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_PROJECT ?= sasrec
COMPOSE_FILES := -f docker/compose.yaml $(if $(COMPOSE_GPU),-f docker/compose.gpu.yaml,)
MLFLOW_PORT ?= 5000
export MLFLOW_PORT
COMPOSE_ENV = SASREC_DOWNLOAD_IMAGE=$(call image,download) SASREC_SEQUENCES_IMAGE=$(call image,sequences) \
	SASREC_TRAIN_IMAGE=$(call image,train) SASREC_EVALUATE_IMAGE=$(call image,evaluate)

lock: install ## [development] Pin every package of the images in docker/requirements/ (uv pip compile)
	@set -e; for extras in base train; do \
		flag=$$(test $$extras = train && echo "--extra train" || true); \
		{ echo "# Every package of the $$extras images, pinned: generated by \`make lock\` (uv pip compile) from pyproject.toml."; \
		  echo "# torch's CUDA wheel pins its own nvidia-* and triton packages exactly."; \
		  $(BIN)/uv pip compile -q pyproject.toml $$flag --python-version 3.11 \
			--python-platform x86_64-manylinux_2_28 --no-header --no-annotate \
			$(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),) | sed 's/+cpu$$//'; \
		} > $(LOCK_DIR)/$$extras.txt; \
	done

wheels: install ## [development] Put every package the images need into build/wheels/ (offline image builds)
	$(BIN)/pip wheel -q -w build/wheels -r $(LOCK_DIR)/train.txt setuptools
	rm -f build/wheels/sasrec-*.whl

images: install ## [docker] Build the four step images (names from IMAGE_REGISTRY and IMAGE_TAG)
	mkdir -p build/wheels
	@set -e; for step in $(IMAGE_STEPS); do \
		extras=$$(case " $(TORCH_STEPS) " in *" $$step "*) echo train;; esac); \
		image=$$($(BIN)/python -m components.images $$step); \
		echo "building $$image"; \
		docker build --quiet -f docker/Dockerfile -t $$image \
			--build-arg STEP=$$step --build-arg EXTRAS=$$extras \
			--build-arg VERSION=$$($(BIN)/python -c 'from importlib.metadata import version; print(version("sasrec"))') \
			--build-arg REVISION=$$(git describe --always --dirty --abbrev=40 2> /dev/null || true) \
			--build-arg PIP_INSTALL_ARGS="$(PIP_INSTALL_ARGS)" . ; \
	done
	@docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep sasrec-
	@older=$$($(older_images) | wc -l); test "$$older" = 0 \
		|| echo "$$older step images of other tags are kept: make prune-images removes them"

prune-images: install ## [docker] Free the disk older builds hold: the step images of other tags, dangling build stages
	@$(older_images) | xargs -r docker rmi
	docker image prune --force --filter label=$(IMAGE_LABEL)

push: install ## [docker] Push the four step images to IMAGE_REGISTRY
	@test -n "$(IMAGE_REGISTRY)" || { echo "set IMAGE_REGISTRY, e.g. make push IMAGE_REGISTRY=ghcr.io/you"; exit 2; }
	@set -e; for step in $(IMAGE_STEPS); do docker push $$($(BIN)/python -m components.images $$step); done

compose-run: install ## [docker] Run the pipeline with docker compose (SOURCE, KCORE, HPARAMS; COMPOSE_GPU=1 for GPUs)
	$(COMPOSE_ENV) $(COMPOSE) -p $(COMPOSE_PROJECT) $(COMPOSE_FILES) run --rm evaluate
	@echo "MLflow UI: http://localhost:$(MLFLOW_PORT) (make compose-down stops it)"

compose-down: ## [docker] Stop the compose services (the MLflow server); ARGS=--volumes also drops the data
	$(COMPOSE_ENV) $(COMPOSE) -p $(COMPOSE_PROJECT) -f docker/compose.yaml down $(ARGS)

run-docker: install ## [docker] Run the KFP pipeline with kfp.local.DockerRunner on the images, MLflow from compose
	$(COMPOSE_ENV) $(COMPOSE) -p $(COMPOSE_PROJECT) -f docker/compose.yaml up -d mlflow
	MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) \
		$(BIN)/sasrec run --runner docker --output-dir outputs/docker $(ARGS)
	@echo "MLflow UI: http://localhost:$(MLFLOW_PORT) (make compose-down stops it)"

submit: compile-pipeline ## [cluster] Submit a run to Kubeflow: KFP_HOST, KFP_NAMESPACE, KFP_EXPERIMENT, KFP_RUN_NAME; ARGS="--param NAME=VALUE ..."
	$(BIN)/python -m pipelines.submit --package $(PIPELINE_YAML) $(ARGS)

test-docker: install ## [development] Build the images and run the pipeline in them on a real Docker engine (started when needed)
	docker/with-engine.sh $(MAKE) wheels images test-docker-run

test-docker-run: install
	$(BIN)/pytest -m docker tests/docker $(PYTEST_ARGS)

clean: ## [local] Remove build outputs (keeps .venv)
	rm -rf build outputs local_outputs .pytest_cache .ruff_cache
