"""The environment variables that carry credentials: what a Kubernetes secret gives each pod.

Import-free: the pipeline definition, the local runner and the TrainJob launcher all name
them from here.
"""

MLFLOW_CREDENTIALS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
STORAGE_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
)  # fmt: skip
