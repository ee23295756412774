"""The name of every file and artifact the steps write, defined once for writers and readers.

It imports nothing: the served model reads the model directory's names from here in an
environment without polars.
"""

# The download and sequences steps (`sasrec.data.schema` names them too).
INTERACTIONS_FILE = "interactions.parquet"
TRAIN_FILE = "train.parquet"
VALID_FILE = "valid.parquet"
TEST_FILE = "test.parquet"
ITEM_VOCAB_FILE = "item_vocab.parquet"
ITEM_TITLES_FILE = "item_titles.parquet"
STATS_FILE = "stats.json"
# The model directory (`sasrec.model_dir`), beside the vocabulary and titles above.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
TRAINING_FILE = "training.json"
POPULAR_FILE = "popular_items.json"
MODEL_DIR_ARTIFACT = "model_dir"  # its name among an MLflow run's and logged model's artifacts
SERVING_MODEL_NAME = "model"  # the MLflow model a training run logs: runs:/<run id>/model


def run_model_uri(run_id: str) -> str:
    """The MLflow URI of the model a training run logged, registered or not."""
    return f"runs:/{run_id}/{SERVING_MODEL_NAME}"


# Evaluation, promotion and recommendations.
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
BREAKDOWNS_FILE = "breakdowns.csv"
PROMOTION_FILE = "promotion.json"  # the promote step's decision
RECOMMENDATIONS_FILE = "recommendations.parquet"
# A scoring shard's ranks of its users, per split ("test", "valid") and scorer.
RANKS_FILE = "ranks_{split}_{scorer}.parquet"
