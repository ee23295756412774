"""Test NDCG@10 along training on the SASRec paper's Games data (Video.txt), every K epochs.

Shows how fast each recipe learns, so that a time budget can be spent well: each config
trains through the library's own loop (`start_training`, `fit`, without early stopping)
and an after-epoch hook scores the model it keeps (the weight average) on the test users
every `--every` epochs, under the paper's sampled protocol and on the full catalogue.
The test scores only describe the curve; nothing is selected on them. Run from the
repository root, one process per config to use both cores (the figures depend slightly on
the thread count, not on the run):

    OMP_NUM_THREADS=1 .venv/bin/python bench/learning_curves.py \
        --config 'neg1024={"num_negatives": 1024, "max_epochs": 60}'

Prints one Markdown table row per config and checkpoint for docs/benchmarks.md.
"""

import argparse
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from machine import describe_machine
from paper_data import VIDEO_TXT, video_sequences
from sasrec.config import HParams, parse_hparams
from sasrec.inputs import SequenceFiles, read_sequences
from sasrec.model import SASRec
from sasrec.scoring import rank_held_out
from sasrec.training.train import fit, start_training_on


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
    sequences = read_sequences(
        video_sequences(args.source, Path(tempfile.mkdtemp(prefix="learning_curves_")))
    )
    machine = f"{describe_machine()}, {torch.get_num_threads()} thread(s)"
    for config in args.config:
        name, _, overrides = config.partition("=")
        hparams = parse_hparams(overrides)
        # Validation only at the end, and no early stopping: the whole curve is wanted.
        hparams = dataclasses.replace(hparams, eval_every=hparams.max_epochs, patience=1)
        training = start_training_on(sequences, hparams)
        if args.zero_bias:
            torch.nn.init.zeros_(training.state.model.item_bias)
        label = f"{machine} | {name}{' (bias from 0)' if args.zero_bias else ''}"
        fit(training, TestScores(sequences, hparams, args.every, label))


@dataclass
class TestScores:
    """After-epoch hook: a table row of test NDCG@10 every `every` epochs and at the end."""

    sequences: SequenceFiles
    hparams: HParams
    every: int
    label: str  # machine and config
    train_seconds: float = 0.0  # training only, without validation or these scores

    def __call__(self, epoch: int, metrics: dict[str, float], model: SASRec) -> None:
        self.train_seconds += metrics["epoch_seconds"]
        if epoch % self.every and epoch != self.hparams.max_epochs:
            return
        test = rank_held_out(
            model.eval(), self.sequences.test, self.sequences.num_items, self.hparams.max_len
        ).metrics(ks=(10,))
        print(
            f"| {self.label} | {epoch} | {self.train_seconds:.0f} "
            f"| {test['sampled_ndcg@10']:.4f} | {test['ndcg@10']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
