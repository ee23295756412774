from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sasrec")
except PackageNotFoundError:  # the copy that travels with an MLflow model is not installed
    __version__ = "unknown"
