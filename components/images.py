"""Container image of each step: the one place image names are made.

`IMAGE_REGISTRY` (e.g. `ghcr.io/acme`) and `IMAGE_TAG` (default: the package version) are
read from the environment by the image build and the pipeline compile alike.
"""

import os
import sys
from importlib.metadata import version

STEPS = ("download", "sequences", "train", "evaluate")


def image_uri(step: str) -> str:
    """The image of `step`, e.g. `ghcr.io/acme/sasrec-train:0.1.0`."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    registry = os.environ.get("IMAGE_REGISTRY", "").rstrip("/")
    tag = os.environ.get("IMAGE_TAG") or version("sasrec")
    name = f"sasrec-{step}:{tag}"
    return f"{registry}/{name}" if registry else name


if __name__ == "__main__":  # `python -m components.images STEP`: what the Makefile tags
    print(image_uri(sys.argv[1]))
