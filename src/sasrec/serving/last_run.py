"""The model of the last `sasrec run` into an output folder, for `make serve` without MODEL.

    python -m sasrec.serving.last_run outputs

prints shell assignments, `MODEL_URI=runs:/<run id>/model MLFLOW_TRACKING_URI=<store>`,
or one line naming what is missing (exit 2).
"""

import shlex
import sys
from pathlib import Path

from sasrec.errors import SASRecError, exit_on_error
from sasrec.filenames import TRAINING_FILE, run_model_uri
from sasrec.io import read_json


def last_run_model(output_dir: str | Path) -> tuple[str, str]:
    """(model URI, tracking URI) of the run whose model `sasrec run` copied to output_dir/model.

    Raises:
        SASRecError: when the folder holds no such model, or it was trained without MLflow.
    """
    training_file = Path(output_dir) / "model" / TRAINING_FILE
    if not training_file.is_file():
        raise SASRecError(
            f"no model of a local run in {output_dir} (no {training_file}): run `make run` "
            "first, or name one: make serve MODEL=models:/NAME@champion"
        )
    training = read_json(training_file)
    run_id, store = training.get("mlflow_run_id"), training.get("mlflow_tracking_uri")
    if not run_id or not store:
        raise SASRecError(f"{training_file} names no MLflow run: set MODEL to a model URI")
    return run_model_uri(run_id), store


def main(argv: list[str] | None = None) -> int:
    """Print `MODEL_URI=... MLFLOW_TRACKING_URI=...` for the folder given (default outputs)."""
    args = sys.argv[1:] if argv is None else argv
    with exit_on_error("serve"):
        model, store = last_run_model(args[0] if args else "outputs")
        print(f"MODEL_URI={shlex.quote(model)} MLFLOW_TRACKING_URI={shlex.quote(store)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
