"""The compiled pipeline spec: tasks, edges, artifact types, images, GPU request."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.compile import compile_pipeline

STEPS = ("download", "sequences", "train", "evaluate")


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> list[dict]:
    """The pipeline spec, then the Kubernetes platform spec (node selector, tolerations)."""
    path = compile_pipeline(tmp_path_factory.mktemp("build") / "sasrec_pipeline.yaml")
    return list(yaml.safe_load_all(path.read_text()))


@pytest.fixture(scope="module")
def spec(documents) -> dict:
    return documents[0]


def loop_over(spec: dict, plan: str, tasks: dict | None = None) -> str:
    """The name of the ParallelFor in `tasks` (default: the root's) over `plan`'s output."""
    tasks = spec["root"]["dag"]["tasks"] if tasks is None else tasks
    (name,) = [
        name
        for name, task in tasks.items()
        if task.get("parameterIterator", {}).get("items", {}).get("inputParameter")
        == f"pipelinechannel--{plan}-Output"
    ]
    return name


def sweep_loop(spec: dict) -> str:
    return loop_over(spec, "plan-trials")


def train_task(spec: dict) -> dict:
    """The train task: inside the sweep's ParallelFor, one per trial."""
    return spec["components"][f"comp-{sweep_loop(spec)}"]["dag"]["tasks"]["train"]


def test_tasks_chained_by_artifacts(spec):
    tasks = {
        name: task
        for name, task in spec["root"]["dag"]["tasks"].items()
        if not name.startswith(("condition-", "for-loop-"))
    }
    assert set(tasks) == {
        *STEPS, "plan-trials", "select-trial", "promote", "plan-scoring-shards", "close-runs"
    } - {"train"}  # fmt: skip
    producers = {
        name: {
            (arg, source["producerTask"], source["outputArtifactKey"])
            for arg, artifact in task.get("inputs", {}).get("artifacts", {}).items()
            for source in [artifact["taskOutputArtifact"]]
        }
        for name, task in tasks.items()
    }
    loop = sweep_loop(spec)
    assert producers == {
        "download": set(),
        "sequences": {("interactions", "download", "interactions")},
        "plan-trials": set(),
        "select-trial": {("models", loop, "pipelinechannel--train-model")},
        "promote": {("model", "select-trial", "model"), ("sequences", "sequences", "sequences")},
        "plan-scoring-shards": set(),
        "evaluate": {("model", "select-trial", "model"), ("sequences", "sequences", "sequences"),
                     ("promotion", "promote", "promotion"),
                     ("scores", loop_over(spec, "plan-scoring-shards"),
                      "pipelinechannel--score-users-scores")},
        "close-runs": set(),
    }  # fmt: skip
    inner = train_task(spec)["inputs"]["artifacts"]["sequences"]
    assert inner == {"componentInputArtifact": "pipelinechannel--sequences-sequences"}
    assert {name: task["taskInfo"]["name"] for name, task in tasks.items()} == {
        "download": "Download reviews",
        "sequences": "Build sequences",
        "plan-trials": "Plan trials",
        "select-trial": "Select the best trial",
        "promote": "Register and promote",
        "plan-scoring-shards": "Plan scoring shards",
        "evaluate": "Evaluate",
        "close-runs": "Close MLflow runs",
    }


def test_the_close_runs_task_runs_however_the_steps_before_it_end(spec):
    close = spec["root"]["dag"]["tasks"]["close-runs"]
    assert close["dependentTasks"] == ["evaluate"]  # which waits on every earlier step
    assert close["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    status = close["inputs"]["parameters"]["status"]
    assert status == {"taskFinalStatus": {"producerTask": "evaluate"}}
    run_id = close["inputs"]["parameters"]["pipeline_run_id"]["runtimeValue"]["constant"]
    assert run_id == "{{$.pipeline_job_uuid}}"


def test_trials_fan_out_from_the_plan_and_are_collected(spec):
    loop = spec["root"]["dag"]["tasks"][sweep_loop(spec)]
    assert (
        loop["parameterIterator"]["items"]["inputParameter"]
        == "pipelinechannel--plan-trials-Output"
    )
    assert loop["iteratorPolicy"]["parallelismLimit"] == 4  # the compile default
    inputs = train_task(spec)["inputs"]["parameters"]
    for name in ("hparams", "trial", "parent_run_id"):
        assert inputs[name]["parameterExpressionSelector"] == f'parseJson(string_value)["{name}"]'
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["hparams_grid"] == {"defaultValue": [], "isOptional": True,
                                          "parameterType": "LIST"}  # fmt: skip
    assert parameters["promotion_metric"]["defaultValue"] == "ndcg@10"
    collected = spec["components"]["comp-select-trial"]["inputDefinitions"]["artifacts"]["models"]
    assert collected["isArtifactList"] is True


def test_sweep_parallelism_is_a_compile_setting(tmp_path):
    out = tmp_path / "p.yaml"
    env = os.environ | {"SWEEP_PARALLELISM": "2"}
    subprocess.run([sys.executable, "-m", "pipelines.compile", str(out)], env=env, check=True)
    spec = next(yaml.safe_load_all(out.read_text()))
    assert spec["root"]["dag"]["tasks"][sweep_loop(spec)]["iteratorPolicy"] == {
        "parallelismLimit": 2
    }


def test_parameters_setting_nested_task_resources_reach_them(spec):
    """Every pipeline channel a loop or condition's task reads is declared and passed in."""
    root = spec["root"]["dag"]["tasks"]
    for name, task in root.items():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" not in component:
            continue
        declared = component["inputDefinitions"]["parameters"]
        loop_item = task.get("parameterIterator", {}).get("itemInput")
        for inner in component["dag"]["tasks"].values():
            for binding in inner["inputs"].get("parameters", {}).values():
                channel = binding.get("componentInputParameter")
                if channel and channel != loop_item:
                    assert channel in declared, (name, channel)
                    assert channel in task["inputs"]["parameters"], (name, channel)
    passed = root[sweep_loop(spec)]["inputs"]["parameters"]
    assert passed["pipelinechannel--train_cpu"] == {"componentInputParameter": "train_cpu"}


def test_artifact_types(spec):
    def outputs(step):
        artifacts = spec["components"][f"comp-{step}"]["outputDefinitions"]["artifacts"]
        return {name: a["artifactType"]["schemaTitle"] for name, a in artifacts.items()}

    assert outputs("download") == {
        "interactions": "system.Dataset",
        "download_stats": "system.Metrics",
    }
    assert outputs("sequences") == {
        "sequences": "system.Dataset",
        "sequence_stats": "system.Metrics",
        "report": "system.HTML",
    }
    assert outputs("train") == {"model": "system.Model"}
    assert outputs("evaluate") == {
        "evaluation": "system.Artifact",
        "metrics": "system.Metrics",
        "report": "system.HTML",
    }
    assert outputs("recommend") == {"recommendations": "system.Dataset"}
    assert outputs("score-users") == {"scores": "system.Dataset"}
    assert outputs("merge-recommendations") == {"recommendations": "system.Dataset"}


def test_recommendations_run_on_a_pipeline_condition(spec):
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["write_recommendations"]["defaultValue"] is True
    (name,) = [n for n in spec["root"]["dag"]["tasks"] if n.startswith("condition-")]
    condition = spec["root"]["dag"]["tasks"][name]
    assert "write_recommendations" in condition["triggerPolicy"]["condition"]
    inner_tasks = spec["components"][f"comp-{name}"]["dag"]["tasks"]
    loop = loop_over(spec, "plan-scoring-shards", inner_tasks)
    inner = spec["components"][f"comp-{loop}"]["dag"]["tasks"]["recommend"]
    sources = {
        arg: artifact["componentInputArtifact"]
        for arg, artifact in inner["inputs"]["artifacts"].items()
    }
    assert sources == {
        "model": "pipelinechannel--select-trial-model",
        "sequences": "pipelinechannel--sequences-sequences",
    }
    merge = inner_tasks["merge-recommendations"]["inputs"]["artifacts"]["shards"]
    assert merge["taskOutputArtifact"]["producerTask"] == loop


def test_scoring_fans_out_over_shards_and_each_merge_collects_them(spec):
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["scoring_shards"] == {"defaultValue": 1.0, "isOptional": True,
                                            "parameterType": "NUMBER_INTEGER"}  # fmt: skip
    plan = spec["root"]["dag"]["tasks"]["plan-scoring-shards"]["inputs"]["parameters"]
    assert plan["scoring_shards"] == {"componentInputParameter": "scoring_shards"}
    loop = loop_over(spec, "plan-scoring-shards")
    assert "iteratorPolicy" not in spec["root"]["dag"]["tasks"][loop]  # every shard at once
    score = spec["components"][f"comp-{loop}"]["dag"]["tasks"]["score-users"]["inputs"]
    item = spec["root"]["dag"]["tasks"][loop]["parameterIterator"]["itemInput"]
    assert score["parameters"]["shard"] == {"componentInputParameter": item}
    assert score["parameters"]["scoring_shards"] == {
        "componentInputParameter": "pipelinechannel--scoring_shards"
    }
    for component, name in (("evaluate", "scores"), ("merge-recommendations", "shards")):
        collected = spec["components"][f"comp-{component}"]["inputDefinitions"]["artifacts"]
        assert collected[name]["isArtifactList"] is True


def test_one_image_per_step(spec):
    executors = spec["deploymentSpec"]["executors"]
    images = {step: executors[f"exec-{step}"]["container"]["image"] for step in STEPS}
    assert len(set(images.values())) == 4
    assert all(image.startswith(f"sasrec-{step}:") for step, image in images.items())


def test_training_requests_gpus_from_a_pipeline_parameter(spec):
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert "gpu_type" in resources["accelerator"]["resourceType"]
    assert "gpu_count" in resources["accelerator"]["resourceCount"]
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["gpu_count"]["defaultValue"] == 1
    assert parameters["gpu_type"]["defaultValue"] == "nvidia.com/gpu"
    # The same parameter sets the number of data-parallel training processes.
    train_inputs = train_task(spec)["inputs"]["parameters"]
    assert train_inputs["num_processes"]["componentInputParameter"] == "pipelinechannel--gpu_count"


def test_train_placement_from_pipeline_parameters(documents):
    train = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    # Inside the sweep's loop: the loop's input, which the root passes from the parameter.
    assert train["nodeSelector"]["nodeSelectorJson"] == {
        "componentInputParameter": "pipelinechannel--train_node_selector"
    }
    assert train["tolerations"][0]["tolerationJson"] == {
        "componentInputParameter": "pipelinechannel--train_tolerations"
    }
    spec = documents[0]
    passed = spec["root"]["dag"]["tasks"][sweep_loop(spec)]["inputs"]["parameters"]
    assert passed["pipelinechannel--train_node_selector"] == {
        "componentInputParameter": "train_node_selector"
    }


def test_data_steps_are_cached_and_training_is_not(spec):
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["download"]["cachingOptions"] == {"enableCache": True}
    assert tasks["sequences"]["cachingOptions"] == {"enableCache": True}
    assert not train_task(spec)["cachingOptions"].get("enableCache")
    for name in ("plan-trials", "select-trial", "promote", "evaluate"):
        assert not tasks[name]["cachingOptions"].get("enableCache"), name


def test_pipeline_parameters_and_defaults(spec):
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["source"]["defaultValue"] == "amazon2023:Video_Games"
    assert parameters["kcore"]["defaultValue"] == 5
    assert parameters["split"]["defaultValue"] == "leave_one_out"
    assert parameters["hparams"]["parameterType"] == "STRUCT"
    assert {"amazon_base_url", "mlflow_tracking_uri", "mlflow_experiment"} <= set(parameters)


def test_image_registry_and_tag_from_the_environment(tmp_path):
    out = tmp_path / "p.yaml"
    env = os.environ | {"IMAGE_REGISTRY": "registry.example/team/", "IMAGE_TAG": "v9"}
    subprocess.run([sys.executable, "-m", "pipelines.compile", str(out)], env=env, check=True)
    executors = next(yaml.safe_load_all(out.read_text()))["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["image"] == "registry.example/team/sasrec-train:v9"


RESOURCE_PARAMETERS = {"download": "download", "sequences": "sequences", "train": "train",
                       "evaluate": "evaluate"}  # fmt: skip


def test_every_task_requests_and_limits_cpu_and_memory_from_parameters(spec, documents):
    executors = spec["deploymentSpec"]["executors"]
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for step, prefix in RESOURCE_PARAMETERS.items():
        resources = executors[f"exec-{step}"]["container"]["resources"]
        for kind, key in (("cpu", "Cpu"), ("memory", "Memory")):
            placeholder = f"{{{{$.inputs.parameters['pipelinechannel--{prefix}_{kind}']}}}}"
            assert resources[f"resource{key}Request"] == placeholder, step
            assert resources[f"resource{key}Limit"] == placeholder, step
            assert parameters[f"{prefix}_{kind}"]["defaultValue"]
    assert parameters["train_memory"]["defaultValue"] == "16Gi"
    recommend = executors["exec-recommend"]["container"]["resources"]
    memory = "{{$.inputs.parameters['pipelinechannel--evaluate_memory']}}"
    assert recommend["resourceMemoryLimit"] == recommend["resourceMemoryRequest"] == memory
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in [
        *RESOURCE_PARAMETERS,
        "recommend",
    ]:  # a /tmp of its own: the images run with a read-only root
        (scratch,) = [
            m for m in platform[f"exec-{step}"]["emptyDirMounts"] if m["mountPath"] == "/tmp"
        ]
        assert scratch["sizeLimit"].endswith("Gi")
    shm = [m for m in platform["exec-train"]["emptyDirMounts"] if m["mountPath"] == "/dev/shm"]
    assert shm == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi",
                    "volumeName": "dshm"}]  # fmt: skip


def test_train_is_retried_and_finds_its_checkpoint_by_the_pipeline_run(spec):
    train = train_task(spec)
    assert train["retryPolicy"]["maxRetryCount"] == 3
    inputs = train["inputs"]["parameters"]
    assert inputs["checkpoint_root"] == {
        "componentInputParameter": "pipelinechannel--checkpoint_root"
    }
    assert inputs["pipeline_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert spec["root"]["inputDefinitions"]["parameters"]["checkpoint_root"]["defaultValue"] == ""


def test_secrets_are_optional_and_named_by_parameters(documents):
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]

    def secrets(step):
        # A task in the sweep's loop reads the loop's input that the root passes on.
        return {
            entry["secretNameParameter"]["componentInputParameter"].removeprefix(
                "pipelinechannel--"
            ): (
                entry["optional"],
                sorted(key["envVar"] for key in entry["keyToEnv"]),
            )
            for entry in platform[f"exec-{step}"].get("secretAsEnv", [])
        }

    mlflow_env = sorted(["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                         "MLFLOW_TRACKING_TOKEN"])  # fmt: skip
    storage = secrets("download")["storage_secret"]
    assert storage[0] is True and {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(storage[1])
    assert secrets("train") == {"storage_secret": storage, "mlflow_secret": (True, mlflow_env)}
    assert secrets("evaluate") == secrets("promote") == secrets("train")
    assert (
        secrets("plan-trials") == secrets("select-trial") == {"mlflow_secret": (True, mlflow_env)}
    )
    assert secrets("sequences") == {} and secrets("recommend") == {}


def test_image_pull_secrets_from_the_environment(tmp_path):
    out = tmp_path / "p.yaml"
    env = os.environ | {"IMAGE_PULL_SECRETS": "regcred, other"}
    subprocess.run([sys.executable, "-m", "pipelines.compile", str(out)], env=env, check=True)
    platform = list(yaml.safe_load_all(out.read_text()))[1]["platforms"]["kubernetes"]
    for executor in platform["deploymentSpec"]["executors"].values():
        names = [entry["secretName"] for entry in executor["imagePullSecret"]]
        assert names == ["regcred", "other"]


# What each feature of the compiled YAML needs of the KFP backend (the API server, driver
# and launcher): the oldest release that runs it, and why.
BACKEND_FEATURES = {
    "resources from parameters": ((2, 4), "resourceCpuLimit etc. and accelerator placeholders"),
    "nodeSelectorJson": ((2, 5), "node selector as a JSON parameter"),
    "tolerationJson": ((2, 5), "tolerations as a JSON parameter"),
    "secretNameParameter": ((2, 4), "secret name from a pipeline parameter"),
    "secretAsEnv.optional": ((2, 15), "optional secrets; older drivers reject the field"),
    "emptyDirMounts": ((2, 3), "emptyDir volumes (/tmp, /dev/shm)"),
    "retryPolicy": ((2, 4), "task retries"),
    "imagePullSecret": ((2, 1), "image pull secrets"),
}
KNOWN_PLATFORM_KEYS = {"emptyDirMounts", "nodeSelector", "tolerations", "secretAsEnv",
                       "imagePullSecret"}  # fmt: skip


def backend_features(documents: list[dict]) -> set[str]:
    """The features of `BACKEND_FEATURES` that a compiled pipeline uses."""
    spec, platform = documents[0], documents[1]["platforms"]["kubernetes"]
    text = yaml.safe_dump(spec)
    used = {"resources from parameters"} if "resourceCpuLimit: '{{$.inputs" in text else set()
    if "retryPolicy" in text:
        used.add("retryPolicy")
    for executor in platform["deploymentSpec"]["executors"].values():
        unknown = set(executor) - KNOWN_PLATFORM_KEYS
        assert not unknown, f"new Kubernetes settings {unknown}: add them to BACKEND_FEATURES"
        used |= {key for key in ("emptyDirMounts", "imagePullSecret") if key in executor}
        used |= (
            {"nodeSelectorJson"}
            if "nodeSelectorJson" in executor.get("nodeSelector", {})
            else set()
        )
        used |= {"tolerationJson" for t in executor.get("tolerations", []) if "tolerationJson" in t}
        for secret in executor.get("secretAsEnv", []):
            used |= {"secretNameParameter"} if "secretNameParameter" in secret else set()
            used |= {"secretAsEnv.optional"} if "optional" in secret else set()
    return used


def test_the_docs_state_the_kfp_backend_the_compiled_pipeline_needs(documents):
    needed = max(BACKEND_FEATURES[feature][0] for feature in backend_features(documents))
    root = Path(__file__).parents[2]
    deployment = (root / "docs" / "deployment.md").read_text()
    stated = re.search(r"Minimum KFP backend: \*\*(\d+)\.(\d+)\*\*", deployment)
    assert stated, "docs/deployment.md must state 'Minimum KFP backend: **X.Y**'"
    assert (int(stated[1]), int(stated[2])) >= needed, (
        f"the compiled pipeline needs KFP backend {needed}; update docs/deployment.md"
    )
    for feature in backend_features(documents):
        assert BACKEND_FEATURES[feature][1] in deployment, f"docs/deployment.md must list {feature}"
    readme = (root / "README.md").read_text()
    assert f"backend {stated[1]}.{stated[2]} or newer" in readme  # the prerequisites agree


def test_multi_node_training_is_asked_for_by_a_parameter_with_the_train_image(spec):
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["train_nodes"]["defaultValue"] == 1.0
    inputs = train_task(spec)["inputs"]["parameters"]
    assert inputs["train_nodes"] == {"componentInputParameter": "pipelinechannel--train_nodes"}
    image = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["image"]
    assert inputs["train_image"]["runtimeValue"]["constant"] == image  # the nodes run it too
    for name, parameter in (("node_cpu", "train_cpu"), ("node_memory", "train_memory"),
                            ("mlflow_secret", "mlflow_secret"),
                            ("storage_secret", "storage_secret")):  # fmt: skip
        assert inputs[name] == {"componentInputParameter": f"pipelinechannel--{parameter}"}
