"""The four training losses on the SASRec paper's Games data (Video.txt), one row each.

Trains through the library (`train_sasrec`, then `evaluate_model`) on the same sequences,
so that only the loss and the hparams given differ. Run from the repository root:

    .venv/bin/python bench/losses.py --config 'bce={"loss": "bce"}' \
        --config 'ce={"loss": "ce", "batch_size": 256}'

Prints one Markdown table row per config for docs/benchmarks.md.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from machine import describe_machine
from paper_data import VIDEO_TXT, video_sequences
from sasrec.config import parse_hparams
from sasrec.evaluation.evaluate import evaluate_model
from sasrec.training.train import train_sasrec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", action="append", required=True, help="NAME=HPARAMS_JSON, repeatable"
    )
    parser.add_argument(
        "--source", type=Path, default=VIDEO_TXT, help="Video.txt (a copy, on a GPU machine)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_losses_"))
    sequences_dir = video_sequences(args.source, work)
    machine = describe_machine()
    for config in args.config:
        name, _, overrides = config.partition("=")
        hparams = parse_hparams(overrides)
        start = time.perf_counter()
        _, summary = train_sasrec(sequences_dir, work / name, hparams)
        train_minutes = (time.perf_counter() - start) / 60
        metrics = evaluate_model(work / name, sequences_dir, work / f"{name}_eval")
        print(
            f"| {machine} | {name} | `{json.dumps(overrides and json.loads(overrides))}` "
            f"| {summary['epochs_run']} ({summary['best_epoch']}) | {train_minutes:.1f} "
            f"| {metrics['sampled_ndcg@10']:.4f} | {metrics['sampled_hit@10']:.4f} "
            f"| {metrics['ndcg@10']:.4f} | {metrics['hit@10']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
