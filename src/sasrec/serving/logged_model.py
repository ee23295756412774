"""Logging the registered model: the model directory as the pyfunc of `serving_model.py`.

MLflow is imported inside the function, as everywhere in the library.
"""

from pathlib import Path

import sasrec
from sasrec.filenames import MODEL_DIR_ARTIFACT, SERVING_MODEL_NAME
from sasrec.serving.recommender import DEFAULT_K, HISTORY, Recommender


def log_recommender_model(model_dir: Path, registered_model_name: str | None = None) -> str:
    """Log the model directory as the pyfunc of `sasrec.serving.serving_model`; returns its URI.

    The pyfunc answers in original item ids (see `sasrec.serving.serving_model`). It is logged from
    code, with the `sasrec` package as its code and the model directory as its one
    artifact: loading it unpickles nothing. Requirements are pinned to this environment's
    versions instead of being inferred (which loads the model once more in a subprocess).
    """
    from importlib.metadata import version

    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types.schema import (
        AnyType,
        Array,
        ColSpec,
        DataType,
        ParamSchema,
        ParamSpec,
        Schema,
    )

    package_dir = Path(sasrec.__file__).parent
    recommender = Recommender(model_dir)
    ids = Array(DataType.string)
    signature = ModelSignature(
        # Any, not Array(string): the model checks the history itself, so that a bad one
        # is answered with 400 by MLServer too (MLflow's own check fails there with 500).
        inputs=Schema([ColSpec(AnyType(), HISTORY, required=False)]),
        outputs=Schema([
            ColSpec(ids, "item_ids"), ColSpec(Array(DataType.double), "scores"),
            ColSpec(DataType.string, "source"), ColSpec(ids, "unknown_ids"),
            *([ColSpec(ids, "titles")] if recommender.titles is not None else []),
        ]),
        params=ParamSchema([ParamSpec("k", DataType.long, DEFAULT_K)]),
    )  # fmt: skip
    example = pd.DataFrame({HISTORY: [recommender.item_ids[1:4]]})  # three known items
    info = mlflow.pyfunc.log_model(
        name=SERVING_MODEL_NAME,
        python_model=str(package_dir / "serving" / "serving_model.py"),
        artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
        code_paths=[str(package_dir)],
        signature=signature,
        input_example=(example, {"k": DEFAULT_K}),
        pip_requirements=[
            f"{name}=={version(name).split('+')[0]}"
            for name in ("mlflow", "torch", "numpy", "pandas", "pyarrow")
        ],
        registered_model_name=registered_model_name,
    )
    return info.model_uri
