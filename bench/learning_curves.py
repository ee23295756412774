"""Test NDCG@10 along training on the SASRec paper's Games data (Video.txt), every K epochs.

Shows how fast each recipe learns, so that a time budget can be spent well: each config
trains through the library (`initial_model`, `train_epoch`, `weight_average`, as
`train_sasrec` does, without early stopping) and its weight average is scored on the test
users every `--every` epochs, under the paper's sampled protocol and on the full catalogue.
The test scores only describe the curve; nothing is selected on them. Run from the
repository root, one process per config to use both cores (the figures depend slightly on
the thread count, not on the run):

    OMP_NUM_THREADS=1 .venv/bin/python bench/learning_curves.py \
        --config 'neg1024={"num_negatives": 1024, "max_epochs": 60}'

Prints one Markdown table row per config and checkpoint for docs/benchmarks.md.
"""

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import polars as pl
import torch

from machine import describe_machine
from paper_data import VIDEO_TXT, video_sequences
from sasrec.config import parse_hparams
from sasrec.data import schema
from sasrec.evaluate import rank_held_out
from sasrec.io import read_json
from sasrec.losses import NextItemObjective, gbce_beta
from sasrec.train import initial_model, learning_rate, train_epoch, training_tensors, weight_average


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", action="append", required=True, help="NAME=HPARAMS_JSON, repeatable"
    )
    parser.add_argument("--every", type=int, default=10, help="epochs between test scores")
    parser.add_argument(
        "--zero-bias", action="store_true", help="start the item bias at 0, as before 2026-11-27"
    )
    parser.add_argument("--source", type=Path, default=VIDEO_TXT, help="a copy of Video.txt")
    args = parser.parse_args()
    if args.every < 1:
        parser.error(f"--every {args.every}: must be at least 1 (epochs between test scores)")
    sequences_dir = video_sequences(args.source, Path(tempfile.mkdtemp(prefix="learning_curves_")))
    train = pl.read_parquet(sequences_dir / schema.TRAIN_FILE)
    test = pl.read_parquet(sequences_dir / schema.TEST_FILE)
    num_items = read_json(sequences_dir / schema.STATS_FILE)["num_items"]
    machine = f"{describe_machine()}, {torch.get_num_threads()} thread(s)"
    for config in args.config:
        name, _, overrides = config.partition("=")
        hparams = parse_hparams(overrides)
        model = initial_model(train, num_items, hparams)
        if args.zero_bias:
            torch.nn.init.zeros_(model.item_bias)
        sequences, lengths = training_tensors(train, hparams.max_len)
        beta = gbce_beta(hparams.num_negatives, num_items, hparams.gbce_t)
        objective = NextItemObjective(model, hparams.loss, beta)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=hparams.lr, betas=(0.9, 0.98), fused=True
        )
        average = weight_average(model, hparams.ema_decay)
        after_step = partial(average.update_parameters, model) if average is not None else None
        evaluated = average.module if average is not None else model
        generator = torch.Generator().manual_seed(hparams.seed)
        seconds = 0.0
        for epoch in range(1, hparams.max_epochs + 1):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(hparams, epoch)
            start = time.perf_counter()
            train_epoch(objective.train(), optimizer, sequences, lengths, hparams, generator,
                        num_items, after_step)  # fmt: skip
            seconds += time.perf_counter() - start
            if epoch % args.every and epoch != hparams.max_epochs:
                continue
            ranks = rank_held_out(evaluated.eval(), test, num_items, hparams.max_len)
            metrics = ranks.metrics(ks=(10,))
            print(
                f"| {machine} | {name}{' (bias from 0)' if args.zero_bias else ''} | {epoch} "
                f"| {seconds:.0f} | {metrics['sampled_ndcg@10']:.4f} | {metrics['ndcg@10']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
