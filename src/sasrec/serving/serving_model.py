"""The registered MLflow model, logged from this code file: nothing of it is pickled.

MLflow runs this file to load the model, so a registry entry carries code you can read
here, and weights that are read with `weights_only=True`. Input: rows with a `history`
column (original item ids, oldest first); param `k` (default 10). Output per row:
`item_ids` (top-k, none of the history), `scores`, `source` (`sasrec`, or `popularity`
for a history of unknown ids), `unknown_ids`, and `titles` when the model has them.
"""

from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from sasrec.filenames import MODEL_DIR_ARTIFACT
from sasrec.serving.recommender import DEFAULT_K, BadRequest, Recommender, histories_from, request_k

try:  # KServe's MLflow runtime (MLServer) answers its own errors with 400, any other with 500
    from mlserver.errors import InferenceError as ServerBadRequest
except ImportError:
    ServerBadRequest = Exception


class InvalidRequest(MlflowException, ServerBadRequest):
    """A 400 answer from both servers: MLflow's (by error code) and MLServer (by class)."""

    def __init__(self, message: str) -> None:
        MlflowException.__init__(self, message, error_code=INVALID_PARAMETER_VALUE)
        self.status_code = 400  # what MLServer answers


class RecommenderModel(PythonModel):
    """The pyfunc face of `sasrec.serving.recommender.Recommender`."""

    def load_context(self, context: Any) -> None:
        """Load the model directory logged as the `model_dir` artifact."""
        self.recommender = Recommender(context.artifacts[MODEL_DIR_ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """One row of recommendations per request row; a bad request raises a 4xx error."""
        try:
            k = request_k((params or {}).get("k", DEFAULT_K))
            answers = self.recommender.recommend(histories_from(model_input), k)
        except BadRequest as err:
            raise InvalidRequest(str(err)) from err
        return pd.DataFrame(answers)


set_model(RecommenderModel())
