"""Compile the pipeline to YAML: `python -m pipelines.compile [OUT]`."""

import os
import sys
from pathlib import Path

from kfp import compiler

from pipelines.sasrec_pipeline import sasrec_pipeline

DEFAULT_OUTPUT = Path("build/sasrec_pipeline.yaml")


def compile_pipeline(out_path: str | Path = DEFAULT_OUTPUT) -> Path:
    """Write the pipeline spec to `out_path` and return it."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(sasrec_pipeline, package_path=str(out_path))
    return out_path


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
