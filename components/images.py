"""Container image of each step: the one place image names are made.

`IMAGE_REGISTRY` (e.g. `ghcr.io/acme`), `IMAGE_TAG` and `IMAGE_PULL_SECRETS` are read from
the environment by the image build and the pipeline compile alike. The default tag is the
package version and a digest of everything that goes into an image, so that a code change
gives new image names: KFP's cache key (image plus inputs) then never reuses outputs of
older code, and nodes never run an older image cached under the same tag.
"""

import functools
import hashlib
import os
import sys
from importlib.metadata import version
from pathlib import Path

STEPS = ("download", "sequences", "train", "evaluate")
REPO_ROOT = Path(__file__).resolve().parents[1]
# What docker/Dockerfile copies into an image, besides the README.
IMAGE_INPUTS = ("pyproject.toml", "docker/Dockerfile", "docker/requirements", "src",
                "components", "pipelines")  # fmt: skip


@functools.cache
def source_digest(root: Path = REPO_ROOT) -> str | None:
    """sha256 of the image inputs under `root` (paths and bytes), or None outside a checkout."""
    if not (root / "pyproject.toml").is_file():
        return None
    digest = hashlib.sha256()
    for entry in IMAGE_INPUTS:
        path = root / entry
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(file.relative_to(root).as_posix().encode() + b"\0")
                digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def default_tag() -> str:
    """`<version>-<first 12 hex of source_digest>`, or the version outside a checkout."""
    digest = source_digest()
    return f"{version('sasrec')}-{digest[:12]}" if digest else version("sasrec")


def image_uri(step: str) -> str:
    """The image of `step`, e.g. `ghcr.io/acme/sasrec-train:0.1.0-3f2a9c1d0b7e`."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    registry = os.environ.get("IMAGE_REGISTRY", "").rstrip("/")
    tag = os.environ.get("IMAGE_TAG") or default_tag()
    name = f"sasrec-{step}:{tag}"
    return f"{registry}/{name}" if registry else name


def image_pull_secrets() -> tuple[str, ...]:
    """Kubernetes secrets to pull the images with: $IMAGE_PULL_SECRETS, comma-separated."""
    names = os.environ.get("IMAGE_PULL_SECRETS", "").split(",")
    return tuple(name.strip() for name in names if name.strip())


if __name__ == "__main__":  # `python -m components.images STEP`: what the Makefile tags
    print(image_uri(sys.argv[1]))
