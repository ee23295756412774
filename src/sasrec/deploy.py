"""What KServe does before MLServer starts, done locally: fetch the model, write the settings.

KServe's storage initializer copies the model's files to /mnt/models and its MLflow runtime
starts MLServer with `mlserver_mlflow.MLflowRuntime` on them (deploy/inferenceservice.yaml).
`python -m sasrec.deploy MODEL_URI DIR` does the same into DIR, for `mlserver start DIR`.
"""

import argparse
import json
import shutil
from pathlib import Path

MLFLOW_RUNTIME = "mlserver_mlflow.MLflowRuntime"  # KServe's runtime for modelFormat mlflow


def prepare_mlserver(model_uri: str, out_dir: str | Path, name: str, port: int) -> Path:
    """Download `model_uri` to `out_dir/model` and write MLServer's settings beside it.

    The gRPC and metrics ports are the two after `port`. Returns `out_dir`.
    """
    import mlflow

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    mlflow.artifacts.download_artifacts(model_uri, dst_path=str(out_dir / "model"))
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": port + 1,
                "metrics_port": port + 2}  # fmt: skip
    model_settings = {
        "name": name,
        "implementation": MLFLOW_RUNTIME,
        "parameters": {"uri": str((out_dir / "model").resolve())},
    }
    (out_dir / "settings.json").write_text(json.dumps(settings, indent=2))
    (out_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return out_dir


def main() -> None:
    """`python -m sasrec.deploy MODEL_URI DIR [--name N] [--port P]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_uri", help="e.g. models:/sasrec-games@champion")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", default="sasrec", help="the model's name in V2 URLs")
    parser.add_argument("--port", type=int, default=5001, help="HTTP port")
    args = parser.parse_args()
    prepare_mlserver(args.model_uri, args.out_dir, args.name, args.port)
    print(f"MLServer settings in {args.out_dir}; V2: POST http://127.0.0.1:{args.port}"
          f"/v2/models/{args.name}/infer")  # fmt: skip


if __name__ == "__main__":
    main()
