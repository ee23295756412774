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
    nested DAG, but never declares that input nor passes it from the DAG above, so the
    task cannot resolve it. This declares and passes each such input at every depth (the
    loop sits inside the exit handler's DAG), as the compiler does for parameters given to
    a task's arguments.
    """
    root_parameters = spec["root"]["inputDefinitions"]["parameters"]

    def channels_needed(dag_component: dict[str, Any]) -> set[str]:
        needed = set()
        for task in dag_component["dag"]["tasks"].values():
            for binding in task.get("inputs", {}).get("parameters", {}).values():
                channel = binding.get("componentInputParameter", "")
                if channel.removeprefix("pipelinechannel--") in root_parameters.keys() - {channel}:
                    needed.add(channel)
            child = spec["components"][task["componentRef"]["name"]]
            if "dag" in child:
                needed |= channels_needed(child)
        return needed

    def wire(dag_component: dict[str, Any], is_root: bool) -> None:
        for task in dag_component["dag"]["tasks"].values():
            child = spec["components"][task["componentRef"]["name"]]
            if "dag" not in child:
                continue
            declared = child.setdefault("inputDefinitions", {}).setdefault("parameters", {})
            passed = task.setdefault("inputs", {}).setdefault("parameters", {})
            for channel in sorted(channels_needed(child) - declared.keys()):
                name = channel.removeprefix("pipelinechannel--")
                declared[channel] = {"parameterType": root_parameters[name]["parameterType"]}
                passed[channel] = {"componentInputParameter": name if is_root else channel}
            wire(child, is_root=False)

    wire(spec["root"], is_root=True)


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
