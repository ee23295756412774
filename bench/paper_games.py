"""Quality and wall time of `sasrec run` on the SASRec paper's Games data (Video.txt).

The paper reports HR@10 0.7410 and NDCG@10 0.5360 under its sampled protocol (held-out
item among 100 random unseen items). Run from the repository root:

    .venv/bin/python bench/paper_games.py [--hparams JSON] [--output-dir DIR]

Prints one Markdown table row for docs/benchmarks.md: SASRec's metrics, then the
full-catalogue NDCG@10 of the transition and popularity baselines on the same users.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_machine
from paper_data import VIDEO_TXT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hparams", default="{}")
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args()
    if not VIDEO_TXT.is_file():
        sys.exit(f"{VIDEO_TXT} is absent: this benchmark needs ../shared/data")
    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="paper_games_"))
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{output_dir.resolve()}/mlflow.db"}
    command = [sys.executable, "-m", "sasrec.cli", "run", "--source", str(VIDEO_TXT)]
    command += ["--kcore", "0", "--output-dir", str(output_dir), "--hparams", args.hparams]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    minutes = (time.perf_counter() - start) / 60
    metrics = json.loads((output_dir / "metrics.json").read_text())
    training = json.loads((output_dir / "model" / "training.json").read_text())
    print(
        f"| {describe_machine()} "
        f"| {args.hparams} | {training['epochs_run']} (best {training['best_epoch']}) "
        f"| {minutes:.1f} | {metrics['sampled_ndcg@10']:.4f} | {metrics['sampled_hit@10']:.4f} "
        f"| {metrics['ndcg@10']:.4f} | {metrics['hit@10']:.4f} "
        f"| {metrics['baseline_transition_ndcg@10']:.4f} "
        f"| {metrics['baseline_popularity_ndcg@10']:.4f} |"
    )


if __name__ == "__main__":
    main()
