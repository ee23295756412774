"""Every step of the pipeline at the full 0-core Video_Games size, each timed with its peak RSS.

    .venv/bin/python bench/synthetic_reviews.py          # build/bench/Video_Games.jsonl.gz
    .venv/bin/python bench/zero_core.py [--source FILE] [--hparams '{"max_epochs": 2}']
    .venv/bin/python bench/benchmark_files.py            # build/bench/mirror/benchmark/...
    .venv/bin/python bench/zero_core.py --mirror build/bench/mirror \
        --source amazon2023:Video_Games:0core/last_out_w_his

Runs, each as its own process (`sasrec ...`) on the whole file, the steps `sasrec run`
chains: download (with `--mirror`, of the official files served from that folder over
HTTP on 127.0.0.1), sequences `--kcore 0` (ignored for an official split, which is kept as
published), train (the defaults, or `--hparams` overrides),
evaluate (the model and both baselines on every test user, validation, report) and
recommend (the top 10 of every user). Prints the step table for docs/benchmarks.md, the
training's seconds per epoch (from its MLflow run), and the folder's
counts, so that a budget can be checked against the defaults' number of epochs.
"""

import argparse
import functools
import json
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mlflow import MlflowClient

from data_pipeline import SASREC, timed
from machine import describe_machine
from sasrec.data import schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="build/bench/Video_Games.jsonl.gz")
    parser.add_argument("--mirror", type=Path, help="folder served as the Amazon 2023 site")
    parser.add_argument("--hparams", default="{}", help="JSON overrides of the training defaults")
    args = parser.parse_args()
    if args.mirror is None and not Path(args.source).is_file():
        raise SystemExit(f"{args.source} is missing: run bench/synthetic_reviews.py first")
    print(f"machine: {describe_machine()}; {args.source}; hparams {args.hparams}", flush=True)
    mirror = [] if args.mirror is None else ["--amazon-base-url", serve(args.mirror)]
    print("| step | wall (s) | peak RSS (GB) |")
    print("| --- | ---: | ---: |")
    with tempfile.TemporaryDirectory(dir="build") as work_dir:
        work = Path(work_dir)
        sequences, model = str(work / "sequences"), str(work / "model")
        steps = {
            "download": [
                "download", "--source", args.source, "--out", str(work / "data"),
                "--cache-dir", str(work / "cache"), *mirror,
            ],
            "sequences (--kcore 0)": [
                "sequences", "--interactions", str(work / "data" / schema.INTERACTIONS_FILE),
                "--out", sequences, "--kcore", "0",
            ],
            "train": [
                "train", "--sequences", sequences, "--out", model, "--hparams", args.hparams,
                "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
            ],
            "evaluate": [
                "evaluate", "--model", model, "--sequences", sequences,
                "--out", str(work / "evaluation"),
            ],
            "recommend": [
                "recommend", "--model", model, "--sequences", sequences,
                "--out", str(work / "recommendations"),
            ],
        }  # fmt: skip
        total = 0.0
        for name, command in steps.items():
            seconds, rss = timed([*SASREC, *command], work / f"{command[0]}.log")
            total += seconds
            print(f"| {name} | {seconds:.1f} | {rss / 1e9:.2f} |", flush=True)
        print(f"| whole pipeline | {total:.1f} ({total / 60:.1f} min) | |")
        stats = json.loads((work / "sequences" / schema.STATS_FILE).read_text())
        print(f"stats: {json.dumps(stats)}")
        training = json.loads((work / "model" / "training.json").read_text())
        summary = ("epochs_run", "best_epoch", "train_seconds")
        print(f"training: {json.dumps({key: training[key] for key in summary})}")
        client = MlflowClient(training["mlflow_tracking_uri"])
        metrics = client.get_run(training["mlflow_run_id"]).data.metrics
        for key in sorted(key for key in metrics if key.endswith("epoch_seconds")):
            history = [m.value for m in client.get_metric_history(training["mlflow_run_id"], key)]
            print(f"{key} per epoch: {[round(value, 1) for value in history]}")
            outside = training["train_seconds"] - sum(history)
            print(f"validation passes and checkpoints: {outside:.1f} s in all")


def serve(folder: Path) -> str:
    """The URL of an HTTP server on 127.0.0.1 serving `folder`, in a thread until exit."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


if __name__ == "__main__":
    main()
