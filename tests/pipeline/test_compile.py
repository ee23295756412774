"""The compiled pipeline spec: tasks, edges, artifact types, images, GPU request."""

import os
import subprocess
import sys

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


def test_four_tasks_chained_by_artifacts(spec):
    tasks = {
        name: task
        for name, task in spec["root"]["dag"]["tasks"].items()
        if not name.startswith("condition-")
    }
    assert set(tasks) == set(STEPS)
    producers = {
        name: {
            (arg, source["producerTask"], source["outputArtifactKey"])
            for arg, artifact in task.get("inputs", {}).get("artifacts", {}).items()
            for source in [artifact["taskOutputArtifact"]]
        }
        for name, task in tasks.items()
    }
    assert producers == {
        "download": set(),
        "sequences": {("interactions", "download", "interactions")},
        "train": {("sequences", "sequences", "sequences")},
        "evaluate": {("model", "train", "model"), ("sequences", "sequences", "sequences")},
    }
    assert {name: task["taskInfo"]["name"] for name, task in tasks.items()} == {
        "download": "Download reviews",
        "sequences": "Build sequences",
        "train": "Train SASRec",
        "evaluate": "Evaluate",
    }


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


def test_recommendations_run_on_a_pipeline_condition(spec):
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["write_recommendations"]["defaultValue"] is True
    condition = spec["root"]["dag"]["tasks"]["condition-1"]
    assert "write_recommendations" in condition["triggerPolicy"]["condition"]
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]["recommend"]
    sources = {
        arg: artifact["componentInputArtifact"]
        for arg, artifact in inner["inputs"]["artifacts"].items()
    }
    assert sources == {
        "model": "pipelinechannel--train-model",
        "sequences": "pipelinechannel--sequences-sequences",
    }


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
    train_inputs = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert train_inputs["num_processes"]["componentInputParameter"] == "gpu_count"
    for step in ("download", "sequences", "evaluate"):
        assert "resources" not in spec["deploymentSpec"]["executors"][f"exec-{step}"]["container"]


def test_train_placement_from_pipeline_parameters(documents):
    train = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert train["nodeSelector"]["nodeSelectorJson"] == {
        "componentInputParameter": "train_node_selector"
    }
    assert train["tolerations"][0]["tolerationJson"] == {
        "componentInputParameter": "train_tolerations"
    }


def test_data_steps_are_cached_and_training_is_not(spec):
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["download"]["cachingOptions"] == {"enableCache": True}
    assert tasks["sequences"]["cachingOptions"] == {"enableCache": True}
    assert not tasks["train"]["cachingOptions"].get("enableCache")
    assert not tasks["evaluate"]["cachingOptions"].get("enableCache")


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
