"""`sasrec run`: the compiled KFP pipeline, executed by KFP's local runner."""

import dataclasses
import logging
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from sasrec.config import HParams
from sasrec.data.schema import METRICS_FILE, RECOMMENDATIONS_FILE, REPORT_FILE
from sasrec.data.sources import amazon_2023_base_url, detect_format, is_remote, resolve_source
from sasrec.errors import SASRecError
from sasrec.io import atomic_path, read_json, write_json
from sasrec.tracking import resolve_tracking_uri

log = logging.getLogger(__name__)


def run_pipeline_locally(
    source: str,
    output_dir: str | Path,
    kcore: int,
    hparams: HParams,
    amazon_base_url: str | None = None,
) -> dict[str, Any]:
    """Compile the pipeline, run it with `kfp.local`'s SubprocessRunner, collect its outputs.

    Each task runs in a subprocess of this Python (no containers). Afterwards the model is
    copied to `output_dir/model/` and the metrics to `output_dir/metrics.json`.

    Returns:
        The evaluation metrics.
    """
    from kfp import components, local

    from pipelines.compile import compile_pipeline

    # Expected here: display names and step images only matter on a cluster.
    warnings.filterwarnings("ignore", message=r"Task '[\w-]+': settings .* have no effect")
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")

    detect_format(resolve_source(source, amazon_base_url))  # fail before starting any task
    output_dir = Path(output_dir).resolve()
    pipeline_yaml = compile_pipeline(output_dir / "sasrec_pipeline.yaml")
    pipeline = components.load_component_from_file(str(pipeline_yaml))
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(output_dir / "pipeline_root"),
    )
    if not is_remote(source) and Path(source).exists():
        source = str(Path(source).resolve())  # tasks may run in another directory
    try:
        run = pipeline(
            source=source,
            amazon_base_url=amazon_2023_base_url(amazon_base_url),
            kcore=kcore,
            hparams=dataclasses.asdict(hparams),
            mlflow_tracking_uri=resolve_tracking_uri(),
        )
    except RuntimeError as err:  # kfp.local raises it when a task fails
        raise SASRecError(_failure_message(str(err))) from err
    for name, output in (("model", "model"), ("evaluation", "evaluation")):
        with atomic_path(output_dir / name) as tmp:
            shutil.copytree(run.outputs[output].path, tmp)
    metrics = read_json(output_dir / "evaluation" / METRICS_FILE)
    write_json(metrics, output_dir / METRICS_FILE)
    recommendations = _latest_recommendations(output_dir / "pipeline_root")
    if recommendations:
        with atomic_path(output_dir / recommendations.name) as tmp:
            shutil.copyfile(recommendations, tmp)
    log.info(
        "model: %s, metrics: %s, report: %s",
        output_dir / "model",
        output_dir / METRICS_FILE,
        output_dir / "evaluation" / REPORT_FILE,
    )
    return metrics


def _latest_recommendations(pipeline_root: Path) -> Path | None:
    """The recommendations file of the newest local run, or None.

    A conditional task's output cannot be a pipeline output, so it is looked up where the
    local runner writes task outputs.
    """
    found = sorted(
        pipeline_root.glob(f"*/recommend/recommendations/{RECOMMENDATIONS_FILE}"),
        key=lambda path: path.stat().st_mtime,
    )
    return found[-1] if found else None


def _failure_message(kfp_error: str) -> str:
    """One plain line from kfp.local's colored failure message."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", kfp_error)
    failed = re.search(r"Inner task failed: '([\w-]+)'", plain)
    task = f"task '{failed.group(1)}'" if failed else "a task"
    return f"pipeline {task} failed; its log above says why ({plain})"
