"""Submit the compiled pipeline to a Kubeflow Pipelines cluster: `make submit`.

    python -m pipelines.submit --host $KFP_HOST [--namespace NS] [--experiment NAME]
        [--run-name NAME] [--package build/sasrec_pipeline.yaml] [--param NAME=VALUE ...]

Parameters are checked against the compiled pipeline before anything is sent: an unknown
name or a value of the wrong type is an error that lists the pipeline's parameters. Values
are JSON where the parameter is a number, a bool, a dict or a list, text otherwise.
Authentication is KFP's own: inside the cluster the pipeline-runner service account token
(`KF_PIPELINES_SA_TOKEN_PATH`), outside it `KFP_TOKEN` (a bearer token) or the credentials
the kfp client finds itself.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from pipelines.compile import DEFAULT_OUTPUT

# The Python type that each KFP parameter type takes.
PARAMETER_TYPES: dict[str, type | tuple[type, ...]] = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": bool,
    "STRUCT": dict,
    "LIST": list,
}


class SubmitError(ValueError):
    """A run that cannot be submitted as asked; the message says why."""


def pipeline_parameters(package_path: str | Path) -> dict[str, str]:
    """The compiled pipeline's parameters: name -> KFP parameter type."""
    # The first YAML document is the pipeline spec; a second one holds Kubernetes settings.
    spec = next(yaml.safe_load_all(Path(package_path).read_text()))
    inputs = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {name: definition["parameterType"] for name, definition in inputs.items()}


def parse_arguments(assignments: list[str], parameters: dict[str, str]) -> dict[str, Any]:
    """`NAME=VALUE` strings as typed pipeline arguments, checked against `parameters`."""
    known = ", ".join(f"{name} ({kind})" for name, kind in sorted(parameters.items()))
    arguments: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep:
            raise SubmitError(f"--param {assignment!r}: expected NAME=VALUE")
        if name not in parameters:
            raise SubmitError(f"--param {name}: the pipeline has no such parameter; it has {known}")
        kind = parameters[name]
        value = text if kind == "STRING" else _json_value(name, text)
        if not isinstance(value, PARAMETER_TYPES[kind]) or (
            isinstance(value, bool) and kind != "BOOLEAN"
        ):
            raise SubmitError(f"--param {name}={text}: expected a {kind} value")
        arguments[name] = value
    return arguments


def _json_value(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SubmitError(f"--param {name}={text}: not valid JSON ({err.msg})") from err


def submit(
    host: str,
    package_path: str | Path,
    arguments: dict[str, Any],
    experiment: str,
    run_name: str | None,
    namespace: str | None,
) -> str:
    """Create the run on the cluster at `host` and return its id."""
    from kfp import Client

    client = Client(host=host, namespace=namespace, existing_token=os.environ.get("KFP_TOKEN"))
    result = client.create_run_from_pipeline_package(
        str(package_path),
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
    )
    return result.run_id


def main(argv: list[str] | None = None) -> int:
    """Entry point: check the arguments, submit, print the run id."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.submit", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("KFP_HOST"), help="KFP API endpoint")
    parser.add_argument("--namespace", default=os.environ.get("KFP_NAMESPACE") or None)
    parser.add_argument("--experiment", default=os.environ.get("KFP_EXPERIMENT", "sasrec"))
    parser.add_argument("--run-name", default=os.environ.get("KFP_RUN_NAME") or None)
    parser.add_argument("--package", type=Path, default=DEFAULT_OUTPUT, help="compiled YAML")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    try:
        if not args.host:
            raise SubmitError("no KFP host: pass --host or set KFP_HOST")
        if not args.package.is_file():
            raise SubmitError(f"{args.package}: no compiled pipeline; run make compile-pipeline")
        arguments = parse_arguments(args.param, pipeline_parameters(args.package))
        run_id = submit(
            args.host, args.package, arguments, args.experiment, args.run_name, args.namespace
        )
    except SubmitError as err:
        print(f"submit: error: {err}", file=sys.stderr)
        return 2
    print(f"submitted run {run_id} to {args.host}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
