"""`sasrec run`: the compiled KFP pipeline, executed by KFP's local runner."""

import collections
import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import requests
import yaml

from sasrec.credentials import MLFLOW_CREDENTIALS, STORAGE_CREDENTIALS
from sasrec.data.schema import (
    EVALUATE_STEP,
    METRICS_FILE,
    RECOMMENDATIONS_FILE,
    REPORT_FILE,
    TRAIN_STEP,
)
from sasrec.data.sources import (
    amazon_2023_base_url,
    detect_format,
    is_remote,
    resolve_source_files,
)
from sasrec.errors import SASRecError
from sasrec.filenames import TRAINING_FILE
from sasrec.io import (
    atomic_dir,
    atomic_path,
    read_json,
    require_dir_path,
    require_output_dir,
    write_json,
)
from sasrec.registry.sweep import plan_trials
from sasrec.storage import login, redact
from sasrec.tracking import resolve_tracking_uri

log = logging.getLogger(__name__)

RUNNERS = ("subprocess", "docker")
# No GPU is required here: training takes CUDA when there is one (device auto), else the CPU.
LOCAL_PIPELINE_ARGS = {"gpu_count": 0}
POD_USER_ID = 54321  # an arbitrary uid, as OpenShift assigns; always in group 0
POD_TMPFS = {"/tmp": "rw,exec,size=8g"}  # the only writable place besides the pipeline root
# Credentials a pod would get from Kubernetes secrets, passed on from this environment.
SECRET_VARIABLES = MLFLOW_CREDENTIALS + STORAGE_CREDENTIALS
MLFLOW_SERVER_WAIT_SECONDS = 90.0
RUN_LOG = "run.log"  # in the output dir, without --verbose: everything the local runner printed
MLFLOW_UI_PORT = 5000  # the Makefile's mlflow-ui default
OUTPUT_FOLDERS = {"model": TRAIN_STEP, "evaluation": EVALUATE_STEP}  # in the output dir
PARAMETERS_WITH_FLAGS = {  # pipeline parameter -> how `sasrec run` sets it
    "source": "--source", "amazon_base_url": "--amazon-base-url", "hparams": "--hparams",
    "kcore": "--kcore", "split": "--split", "with_item_titles": "--with-metadata",
    "mlflow_tracking_uri": "$MLFLOW_TRACKING_URI", "hparams_grid": "--hparams-grid",
    "registered_model_name": "--register-as", "promotion_metric": "--promotion-metric",
}  # fmt: skip


def run_pipeline_locally(
    source: str,
    output_dir: str | Path,
    hparams: dict[str, Any],
    pipeline_args: dict[str, Any] | None = None,
    amazon_base_url: str | None = None,
    runner: str = "subprocess",
    params: list[str] | None = None,
    sweep_parallelism: int = 1,
    verbose: bool = True,
) -> dict[str, Any]:
    """Compile the pipeline, run it with one of `kfp.local`'s runners, collect its outputs.

    `hparams` are the user's overrides (a JSON object's dict), passed on as they are: every
    trial of the sweep is checked with them before any task runs. `pipeline_args` sets other
    pipeline parameters (`kcore`, `split`, ...) by name;
    `gpu_count` is 0 unless given (a local run trains on CUDA when it has it, else on the CPU).

    `subprocess`: each task runs in a subprocess of this Python. `docker`: each task runs in
    its step's image (`make images`) on the host's network, so that it reaches an MLflow
    server and a source on 127.0.0.1. Afterwards the model is copied to `output_dir/model/`
    and the metrics to `output_dir/metrics.json`.

    `params` sets any other pipeline parameter as `NAME=VALUE`, typed and checked against
    the compiled pipeline as `make submit` does; a parameter with a flag of its own (or
    the tracking URI, which comes from the environment) is refused.

    Without `verbose`, the local runner's output (each task's inputs, outputs and log) goes
    to `output_dir/run.log` and the console shows one line per task; a failed task's last
    lines are shown. A sweep (`pipeline_args["hparams_grid"]`) trains up to
    `sweep_parallelism` trials at once. The model of the best trial is copied, with its
    `trials.json`; the evaluation holds `promotion.json`.

    Returns:
        The evaluation metrics.
    """
    from kfp import components

    from pipelines.compile import compile_pipeline
    from pipelines.submit import pipeline_parameters

    # Expected here: display names and step images only matter on a cluster.
    warnings.filterwarnings("ignore", message=r"Task '[\w-]+': settings .* have no effect")
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")

    output_dir = require_dir_path(output_dir).resolve()
    # KFP parameters cannot hold None: a field left to the data (None) is left out.
    hparams = {name: value for name, value in hparams.items() if value is not None}
    _check_before_any_task(output_dir, source, amazon_base_url, hparams, pipeline_args or {})
    with tempfile.TemporaryDirectory() as scratch:  # nothing is written before the checks
        compiled = compile_pipeline(Path(scratch) / "sasrec_pipeline.yaml", sweep_parallelism)
        extra_args = _parameter_arguments(params or [], pipeline_parameters(compiled))
        output_dir.mkdir(parents=True, exist_ok=True)
        pipeline_yaml = Path(shutil.copy(compiled, output_dir / compiled.name))
    pipeline = components.load_component_from_file(str(_without_retries(pipeline_yaml)))
    pipeline_root, tracking_uri = _start_local_runner(output_dir, runner)
    if not is_remote(source) and Path(source).exists():
        source = _task_visible_path(Path(source).resolve(), pipeline_root, runner)
    log_file = output_dir / RUN_LOG
    progress = contextlib.nullcontext() if verbose else TaskProgress.to(log_file)
    try:
        with progress:
            run = pipeline(
                source=source,
                amazon_base_url=amazon_2023_base_url(amazon_base_url),
                hparams=hparams,
                mlflow_tracking_uri=tracking_uri,
                **(LOCAL_PIPELINE_ARGS | (pipeline_args or {}) | extra_args),
            )
    except RuntimeError as err:  # kfp.local raises it when a task fails
        why = "its log above says why" if verbose else (
            f"its last lines above say why (the whole log: {log_file})"
        )  # fmt: skip
        raise SASRecError(_failure_message(str(err), why)) from err
    return _collect_outputs(run, output_dir)


def _start_local_runner(output_dir: Path, runner: str) -> tuple[Path, str]:
    """Set up kfp.local's runner over `output_dir/pipeline_root`; (that root, tracking URI).

    The tracking URI handed to the tasks carries no credentials: they move to the
    environment, as a Kubernetes secret would give them.
    """
    from kfp import local

    pipeline_root = output_dir / "pipeline_root"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    tracking_uri = _credentials_to_environment(
        _server_tracking_uri() if runner == "docker" else resolve_tracking_uri()
    )
    if runner == "docker":
        local.init(runner=_docker_runner(pipeline_root), pipeline_root=str(pipeline_root))
    else:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    return pipeline_root, tracking_uri


def _check_before_any_task(
    output_dir: Path,
    source: str,
    amazon_base_url: str | None,
    hparams: dict[str, Any],
    pipeline_args: dict[str, Any],
) -> None:
    """Refuse, before any task runs, outputs that may not be written and inputs that are bad.

    Raises:
        SASRecError: naming the output folder, the trial's hparams or the source file.
    """
    for name, step in OUTPUT_FOLDERS.items():
        require_output_dir(output_dir / name, step)
    plan_trials(hparams, pipeline_args.get("hparams_grid", []))  # every trial checked
    for file in resolve_source_files(source, amazon_base_url):
        if not is_remote(file.location):
            detect_format(file.location, Path(file.location))


def _collect_outputs(run: Any, output_dir: Path) -> dict[str, Any]:
    """Copy a finished run's model, evaluation and recommendations to `output_dir`.

    Returns:
        The evaluation metrics.
    """
    for name, step in OUTPUT_FOLDERS.items():
        with atomic_dir(output_dir / name, step) as tmp:
            shutil.copytree(run.outputs[name].path, tmp, dirs_exist_ok=True)
    metrics = read_json(output_dir / "evaluation" / METRICS_FILE)
    write_json(metrics, output_dir / METRICS_FILE)
    merged = f"merge-recommendations/recommendations/{RECOMMENDATIONS_FILE}"
    recommendations = _latest_task_output(output_dir / "pipeline_root", merged)
    if recommendations:
        with atomic_path(output_dir / recommendations.name) as tmp:
            shutil.copyfile(recommendations, tmp)
    log.debug(  # `sasrec run` prints where they are in its summary
        "model: %s, metrics: %s, report: %s",
        output_dir / "model",
        output_dir / METRICS_FILE,
        output_dir / "evaluation" / REPORT_FILE,
    )
    return metrics


def _parameter_arguments(params: list[str], parameters: dict[str, str]) -> dict[str, Any]:
    """`--param NAME=VALUE` strings as pipeline arguments, checked against `parameters`.

    `parameters` are the compiled pipeline's names and types (`pipeline_parameters`).

    Raises:
        SASRecError: for an unknown name, a value of the wrong type, or a parameter that
            has a flag of its own.
    """
    from pipelines.submit import SubmitError, parse_arguments

    try:
        arguments = parse_arguments(params, parameters)
    except SubmitError as err:
        raise SASRecError(str(err)) from err
    for name in arguments.keys() & PARAMETERS_WITH_FLAGS:
        raise SASRecError(f"--param {name}: set it with {PARAMETERS_WITH_FLAGS[name]} instead")
    return arguments


def _without_retries(pipeline_yaml: Path) -> Path:
    """The pipeline with no task retries at any depth (loops, conditions), beside the original.

    Retries are for a preempted pod on a cluster; kfp.local honours them too, and would
    rerun a failed task on this machine after minutes of backoff.
    """
    documents = list(yaml.safe_load_all(pipeline_yaml.read_text()))
    spec = documents[0]
    dags = [spec["root"], *spec.get("components", {}).values()]  # a loop's tasks sit in one
    for dag in dags:
        for task in dag.get("dag", {}).get("tasks", {}).values():
            task.pop("retryPolicy", None)
    local_yaml = pipeline_yaml.with_name("local_" + pipeline_yaml.name)
    local_yaml.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return local_yaml


def _credentials_to_environment(tracking_uri: str) -> str:
    """`tracking_uri` without its `user:password@`, which moves to the environment.

    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD reach the tasks as a Kubernetes
    secret would give them (unless already set). A pipeline parameter is printed and
    recorded by KFP; an environment variable is not.
    """
    userinfo = login(tracking_uri)
    if userinfo:
        username, _, password = userinfo.partition(":")
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(username))
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(password))
    return redact(tracking_uri)


def _server_tracking_uri() -> str:
    """The MLflow server that tasks in containers log to: a file store would stay inside."""
    uri = resolve_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        raise SASRecError(
            f"the docker runner needs an MLflow server, not {uri!r}: set MLFLOW_TRACKING_URI="
            "http://HOST:PORT (`make run-docker` starts one with docker compose)"
        )
    _wait_until_healthy(uri)
    return uri


def _wait_until_healthy(server_uri: str, timeout_s: float = MLFLOW_SERVER_WAIT_SECONDS) -> None:
    """Wait for the MLflow server's /health (a server just started takes about 10 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{server_uri.rstrip('/')}/health", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise SASRecError(
                f"the MLflow server at {redact(server_uri)} did not answer in {timeout_s:.0f} s"
            )
        time.sleep(1)


def _docker_runner(pipeline_root: Path) -> Any:
    """A DockerRunner whose containers run as a locked-down pod does.

    Each container runs as a uid with no passwd entry in group 0 (the caller's uid, or
    54321 when called by root), with a read-only root filesystem, a tmpfs on /tmp, HOME at
    the unwritable `/`, and the host's network. Only the pipeline root is writable besides
    /tmp: root gives group 0 write access to it.
    """
    from kfp import local

    if os.getuid() == 0:
        _make_group_writable(pipeline_root)
    environment = {"HOME": "/"} | {
        name: os.environ[name] for name in SECRET_VARIABLES if name in os.environ
    }
    return local.DockerRunner(
        network_mode="host",
        user=f"{os.getuid() or POD_USER_ID}:0",
        read_only=True,
        tmpfs=POD_TMPFS,
        environment=environment,
    )


def _make_group_writable(folder: Path) -> None:
    os.chown(folder, -1, 0)
    os.chmod(folder, 0o775)


def _task_visible_path(source: Path, pipeline_root: Path, runner: str) -> str:
    """`source` as the tasks see it: containers see only the pipeline root, so copy it there."""
    if runner != "docker":
        return str(source)  # tasks may run in another directory: an absolute path
    inputs_dir = pipeline_root / "inputs"
    inputs_dir.mkdir(exist_ok=True)
    shutil.copyfile(source, inputs_dir / source.name)
    return str(inputs_dir / source.name)


def _latest_task_output(pipeline_root: Path, task_file: str) -> Path | None:
    """`task_file` (task/output/file) of the newest local run, or None.

    For outputs that are not the pipeline's (a conditional task's cannot be), looked up
    where the local runner writes task outputs.
    """
    found = sorted(pipeline_root.glob(f"*/{task_file}"), key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


def _failure_message(kfp_error: str, why: str = "its log above says why") -> str:
    """One plain line from kfp.local's colored failure message."""
    plain = _plain(kfp_error)
    failed = re.search(r"Inner task failed: '([\w-]+)'", plain)
    task = f"task '{failed.group(1)}'" if failed else "a task"
    return f"pipeline {task} failed; {why} ({plain})"


def _plain(text: str) -> str:
    """`text` without terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class TaskProgress(io.TextIOBase):
    """The local runner's output, all of it to a log file and one line per task to stderr.

    kfp.local prints each task's executor input, streamed log and outputs to stdout; this
    stands in for stdout while the pipeline runs. When a task fails, its last lines are
    shown, since they say why.
    """

    FAILED_TASK_LINES = 30

    def __init__(self, log: io.TextIOBase) -> None:
        self.log, self.pending = log, ""
        # The local runner runs a ParallelFor's tasks in threads, each printing its task's
        # lines: a text file (and the state below) take one writer at a time. Reentrant:
        # during a task the runner's `print` writes here, the task lines of `_follow` too.
        self.lock = threading.RLock()
        self.started: dict[str, float] = {}
        self.recent: collections.deque[str] = collections.deque(maxlen=self.FAILED_TASK_LINES)
        self.json_depth = 0  # non-zero inside an executor input: not worth showing

    @classmethod
    @contextlib.contextmanager
    def to(cls, log_file: Path) -> Iterator["TaskProgress"]:
        """Send stdout and this process's logging to `log_file`, task lines to stderr."""
        root = logging.getLogger()
        handlers = root.handlers[:]
        with log_file.open("w", encoding="utf-8") as log:
            progress = cls(log)
            print(f"running the pipeline; its whole log: {log_file}", file=sys.stderr)
            root.handlers = [logging.StreamHandler(progress)]
            try:
                with contextlib.redirect_stdout(progress):
                    yield progress
            finally:
                root.handlers = handlers

    def write(self, text: str) -> int:
        """Log `text`; report each task start and end it completes."""
        with self.lock:
            self.log.write(text)
            *lines, self.pending = (self.pending + text).split("\n")
            for line in map(_plain, lines):
                self._follow(line)
        return len(text)

    def _follow(self, line: str) -> None:
        if started := re.search(r"Executing task '([\w-]+)'", line):
            self.started[started.group(1)] = time.monotonic()
            self.recent.clear()
        elif ended := re.search(r"Task '([\w-]+)' finished with status (\w+)", line):
            task, status = ended.groups()
            seconds = time.monotonic() - self.started.get(task, time.monotonic())
            print(f"  {task:<14} {status.lower()} in {seconds:.0f} s", file=sys.stderr)
            if status != "SUCCESS":
                print("\n".join(f"    {kept}" for kept in self.recent), file=sys.stderr)
        elif line.rstrip().endswith("Got executor_input:"):
            self.json_depth = -1  # the JSON starts on the next line
        elif self.json_depth:
            self.json_depth = max(self.json_depth, 0) + line.count("{") - line.count("}")
        elif line.strip() and not re.search(r"\[KFP Executor|Streamed logs:", line):
            self.recent.append(line.strip())


def mlflow_ui_line(training: dict[str, Any]) -> str | None:
    """Where to see the run in the MLflow UI (None for a model of no known experiment).

    A tracking server has the page itself; a local store needs `make mlflow-ui` first.
    """
    from sasrec import tracking

    run_id, experiment_id = training.get("mlflow_run_id"), training.get("mlflow_experiment_id")
    store = training.get("mlflow_tracking_uri", "")
    if not (run_id and experiment_id):
        return None
    if store.startswith(("http://", "https://")):
        return tracking.ui_link(store, experiment_id, run_id)
    local = tracking.ui_link(f"http://127.0.0.1:{MLFLOW_UI_PORT}", experiment_id, run_id)
    return f"make mlflow-ui, then {local}"


def quiet_summary(output_dir: Path) -> str:
    """The end of `sasrec run`'s output: the headline table and where everything is."""
    from sasrec.data.schema import PROMOTION_FILE
    from sasrec.evaluation.headline import console_summary, serve_command
    from sasrec.registry.sweep import read_trials

    output_dir = output_dir.resolve()
    promotion_file = output_dir / "evaluation" / PROMOTION_FILE
    training = read_json(output_dir / "model" / TRAINING_FILE)
    decision = read_json(promotion_file) if promotion_file.is_file() else None
    sequences_report = _latest_task_output(
        output_dir / "pipeline_root", f"sequences/sequences/{REPORT_FILE}"
    )
    places = {
        "report": str(output_dir / "evaluation" / REPORT_FILE),
        "data report": str(sequences_report or "none (no sequences step in this output dir)"),
        "model": str(output_dir / "model"),
        "MLflow run": f"{training.get('mlflow_run_id')} in {training.get('mlflow_tracking_uri')}",
    }
    if link := mlflow_ui_line(training):
        places["MLflow UI"] = link
    if serve := serve_command(training, decision):
        places["serve it"] = serve
    return console_summary(
        read_json(output_dir / METRICS_FILE), read_trials(output_dir / "model"), decision, places
    )
