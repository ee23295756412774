"""Full-ranking quality of the default hyperparameters on every ordered dataset at hand.

Runs the library's steps (download, sequences `--kcore 0`, leave-one-out, `train_sasrec`
with the defaults, `evaluate_model`) on each dataset and prints one Markdown row: SASRec
(and the transition weight it chose) against the transition and popularity baselines,
and, on synthetic first-order Markov chains, against the chain's own oracle (the true
next-item probabilities of the last item, history excluded as for every scorer).
Datasets: the SASRec paper's Games data (Video.txt), Wikipedia edits, MovieLens-100K
(../shared/data), and three Markov chains written here. Run from the repository root;
one process per group uses both cores:

    OMP_NUM_THREADS=1 .venv/bin/python bench/quality_matrix.py --datasets video chain-b
    OMP_NUM_THREADS=1 .venv/bin/python bench/quality_matrix.py \
        --datasets wikipedia ml100k chain-a chain-c
"""

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from machine import describe_machine
from sasrec.config import HParams, parse_hparams
from sasrec.data import schema
from sasrec.data.steps import download_step, sequences_step
from sasrec.evaluation.evaluate import evaluate_model
from sasrec.inputs import read_sequences
from sasrec.scoring import rank_held_out
from sasrec.training.train import train_sasrec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = {
    "video": SHARED / "sasrec-video" / "Video.txt",
    "wikipedia": SHARED / "sasrec-wikipedia" / "wikipedia.txt",
    "ml100k": SHARED / "ml-100k" / "ml-100k.inter",
}


@dataclass(frozen=True)
class MarkovChain:
    """Users walking a first-order chain: each item has a few likely successors."""

    num_items: int
    successors: int  # likely next items of each item
    num_users: int
    min_length: int
    max_length: int
    noise: float  # probability that the next item is uniform instead
    seed: int

    def transitions(self) -> np.ndarray:
        """(num_items, num_items) row-stochastic next-item probabilities, noise included."""
        rng = np.random.default_rng(self.seed)
        matrix = np.zeros((self.num_items, self.num_items))
        for item in range(self.num_items):
            targets = rng.choice(self.num_items, self.successors, replace=False)
            matrix[item, targets] = rng.dirichlet(np.ones(self.successors))
        return (1 - self.noise) * matrix + self.noise / self.num_items

    def write_sasrec_txt(self, path: Path) -> Path:
        """Sequences in SASRec text format (`user item` lines, 1-based ids)."""
        rng = np.random.default_rng(self.seed + 1)
        cumulative = self.transitions().cumsum(1)
        lines = []
        for user in range(1, self.num_users + 1):
            item = int(rng.integers(self.num_items))
            for _ in range(int(rng.integers(self.min_length, self.max_length + 1))):
                lines.append(f"{user} {item + 1}")
                item = min(int(np.searchsorted(cumulative[item], rng.random())), self.num_items - 1)
        path.write_text("\n".join(lines) + "\n")
        return path


CHAINS = {
    "chain-a": MarkovChain(4000, 30, 6000, 6, 40, 0.1, seed=1),
    "chain-b": MarkovChain(1500, 10, 3000, 6, 40, 0.3, seed=2),
    # Enough walks that bigram counts come near the oracle, as in the example.
    "chain-c": MarkovChain(2000, 20, 12000, 6, 40, 0.2, seed=3),
}


def oracle_hit_at_10(chain: MarkovChain, sequences_dir: Path) -> float:
    """HR@10 of the chain's true probabilities on the test users, as the model is ranked."""
    files = read_sequences(sequences_dir)
    # Item index i (1..N) is the chain's item int(item_id) - 1.
    states = torch.tensor([int(i) - 1 for i in files.item_vocab[schema.ITEM_ID]])
    probabilities = torch.from_numpy(chain.transitions()).float()[states][:, states]  # (N, N)

    def scorer(histories: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, N + 1)
        last = histories[:, -1] - 1
        scores = torch.full((len(histories), files.num_items + 1), float("-inf"))
        scores[:, 1:] = probabilities[last]
        return scores

    ranks = rank_held_out(scorer, files.test, files.num_items, max_len=1, num_sampled=0)
    return ranks.metrics(ks=(10,))["hit@10"]


def run(name: str, source: Path, work: Path, hparams: HParams) -> str:
    """One table row: train and evaluate `hparams` (the defaults unless asked) on `source`."""
    download_step(str(source), work / "raw", cache_dir=work / "cache")
    stats = sequences_step(work / "raw" / schema.INTERACTIONS_FILE, work / "seq", kcore=0)
    start = time.perf_counter()
    _, summary = train_sasrec(work / "seq", work / "model", hparams)
    train_minutes = (time.perf_counter() - start) / 60
    metrics = evaluate_model(work / "model", work / "seq", work / "eval")
    oracle = oracle_hit_at_10(CHAINS[name], work / "seq") if name in CHAINS else None
    return (
        f"| {name} | {stats['num_users']:,} | {stats['num_items']:,} | "
        f"{stats['num_interactions']:,} | {summary['epochs_run']} ({summary['best_epoch']}) | "
        f"{train_minutes:.1f} | {summary['transition_weight']} | "
        f"{metrics['ndcg@10']:.4f} | {metrics['hit@10']:.4f} | {metrics['sampled_ndcg@10']:.4f} | "
        f"{metrics['baseline_transition_ndcg@10']:.4f} | "
        f"{metrics['baseline_transition_hit@10']:.4f} | "
        f"{metrics['baseline_popularity_ndcg@10']:.4f} | "
        f"{'' if oracle is None else f'{oracle:.4f}'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=[*REAL, *CHAINS], choices=[*REAL, *CHAINS])
    parser.add_argument("--hparams", default="", help="overrides of the defaults, for ablations")
    args = parser.parse_args()
    hparams = parse_hparams(args.hparams)
    work = Path(tempfile.mkdtemp(prefix="quality_matrix_"))
    threads = torch.get_num_threads()
    print(f"{describe_machine()}, {threads} thread(s), hparams {args.hparams or 'defaults'}")
    print(
        "| data | users | items | interactions | epochs (best) | train min | transition weight "
        "| NDCG@10 | HR@10 | sampled NDCG@10 | transition NDCG@10 | transition HR@10 "
        "| popularity NDCG@10 | oracle HR@10 |"
    )
    for name in args.datasets:
        if name in CHAINS:
            source = CHAINS[name].write_sasrec_txt(work / f"{name}.txt")
        elif REAL[name].is_file():
            source = REAL[name]
        else:
            print(f"| {name} | skipped: {REAL[name]} is absent | |")
            continue
        print(run(name, source, work / name, hparams), flush=True)


if __name__ == "__main__":
    main()
