"""Compile the pipeline to YAML: `python -m pipelines.compile [OUT]`."""

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler

from pipelines.sasrec_pipeline import build_pipeline, sweep_parallelism_from_environment

DEFAULT_OUTPUT = Path("build/sasrec_pipeline.yaml")


def compile_pipeline(
    out_path: str | Path = DEFAULT_OUTPUT, sweep_parallelism: int | None = None
) -> Path:
    """Write the pipeline spec to `out_path` and return it.

    `sweep_parallelism`: trials training at once (None: $SWEEP_PARALLELISM or the default).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if sweep_parallelism is None:
        sweep_parallelism = sweep_parallelism_from_environment()
    pipeline = build_pipeline(sweep_parallelism)
    compiler.Compiler().compile(pipeline, package_path=str(out_path))
    documents = list(yaml.safe_load_all(out_path.read_text()))
    surface_nested_pipeline_inputs(documents[0])
    out_path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return out_path


def surface_nested_pipeline_inputs(spec: dict[str, Any]) -> None:
    """Pass pipeline parameters that set a task's resources inside a loop or condition.

    KFP 2.17's compiler binds a pipeline parameter used only in a task's resources (e.g.
    `train_cpu` inside the sweep's ParallelFor) to a `pipelinechannel--` input of the
    nested DAG, but never declares that input nor passes it from the root, so the task
    cannot resolve it. This declares and passes each such input, as the compiler does
    for parameters given to a task's arguments.
    """
    root = spec["root"]
    root_parameters = root["inputDefinitions"]["parameters"]
    for task in root["dag"]["tasks"].values():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" not in component:
            continue
        declared = component.setdefault("inputDefinitions", {}).setdefault("parameters", {})
        passed = task.setdefault("inputs", {}).setdefault("parameters", {})
        for inner in component["dag"]["tasks"].values():
            for binding in inner.get("inputs", {}).get("parameters", {}).values():
                channel = binding.get("componentInputParameter", "")
                name = channel.removeprefix("pipelinechannel--")
                if channel == name or channel in declared or name not in root_parameters:
                    continue
                declared[channel] = {"parameterType": root_parameters[name]["parameterType"]}
                passed[channel] = {"componentInputParameter": name}


def registry_warning() -> str | None:
    """What to tell a user whose pipeline names local images, which no cluster can pull."""
    if os.environ.get("IMAGE_REGISTRY"):
        return None
    return (
        "warning: IMAGE_REGISTRY is empty, so the pipeline names local images (sasrec-train:"
        "<version>) that a cluster cannot pull; for a cluster, compile with "
        "IMAGE_REGISTRY=<the registry you pushed to>"
    )


if __name__ == "__main__":
    if warning := registry_warning():
        print(warning, file=sys.stderr)
    print(compile_pipeline(*sys.argv[1:2]))
