"""What KServe does before MLServer starts, done locally: fetch the model, write the settings.

KServe's storage initializer copies the model's files to /mnt/models and its MLflow runtime
starts MLServer with `mlserver_mlflow.MLflowRuntime` on them (deploy/inferenceservice.yaml).
`python -m sasrec.serving.deploy MODEL_URI DIR` does the same into DIR, for `mlserver start DIR`.
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from sasrec import tracking
from sasrec.errors import SASRecError, exit_on_error
from sasrec.io import write_json

MLFLOW_RUNTIME = "mlserver_mlflow.MLflowRuntime"  # KServe's runtime for modelFormat mlflow
SETTINGS_FILE, MODEL_SETTINGS_FILE = "settings.json", "model-settings.json"  # MLServer's names
DEPLOY_FILES = ("model", SETTINGS_FILE, MODEL_SETTINGS_FILE)  # what deploy writes


def prepare_mlserver(model_uri: str, out_dir: str | Path, name: str, port: int) -> Path:
    """Download `model_uri` to `out_dir/model` and write MLServer's settings beside it.

    The model is fetched first, into a folder beside `out_dir`: a URI that names no model
    leaves `out_dir` as it was. `out_dir` may be new, empty or an earlier output of this
    command (its model-settings.json and nothing else of its own); any other folder is
    refused. The gRPC and metrics ports are the
    two after `port`. Returns `out_dir`.

    Raises:
        SASRecError: when `out_dir` holds files of its own, or the model cannot be fetched.
    """
    import mlflow

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SASRecError(f"{out_dir} is a file; give a directory for the MLServer settings")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    earlier_deploy = MODEL_SETTINGS_FILE in entries and set(entries) <= set(DEPLOY_FILES)
    if entries and not earlier_deploy:
        raise SASRecError(
            f"{out_dir} holds files that `sasrec.serving.deploy` did not write "
            f"({', '.join(entries[:5])}); give a new or empty directory"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as fetched:
        with tracking.registry_errors(None, f"fetch the model {model_uri}"):
            mlflow.artifacts.download_artifacts(model_uri, dst_path=str(Path(fetched) / "model"))
        out_dir.mkdir(exist_ok=True)
        shutil.rmtree(out_dir / "model", ignore_errors=True)  # an earlier deploy's model
        os.replace(Path(fetched) / "model", out_dir / "model")
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": port + 1,
                "metrics_port": port + 2}  # fmt: skip
    model_settings = {
        "name": name,
        "implementation": MLFLOW_RUNTIME,
        "parameters": {"uri": str((out_dir / "model").resolve())},
    }
    write_json(settings, out_dir / SETTINGS_FILE)
    write_json(model_settings, out_dir / MODEL_SETTINGS_FILE)
    return out_dir


def main() -> None:
    """`python -m sasrec.serving.deploy MODEL_URI DIR [--name N] [--port P]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_uri", help="e.g. models:/sasrec-games@champion")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", default="sasrec", help="the model's name in V2 URLs")
    parser.add_argument("--port", type=int, default=5001, help="HTTP port")
    args = parser.parse_args()
    with exit_on_error("deploy"):
        prepare_mlserver(args.model_uri, args.out_dir, args.name, args.port)
    print(f"MLServer settings in {args.out_dir}; V2: POST http://127.0.0.1:{args.port}"
          f"/v2/models/{args.name}/infer")  # fmt: skip


if __name__ == "__main__":
    main()
