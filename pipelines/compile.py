"""Compile the pipeline to YAML: `python -m pipelines.compile [OUT]`."""

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


if __name__ == "__main__":
    print(compile_pipeline(*sys.argv[1:2]))
