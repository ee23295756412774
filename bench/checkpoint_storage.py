"""What a per-epoch checkpoint costs on local disk and on an S3 API, at real catalogue sizes.

Builds the training state `train.fit` checkpoints (model, Adam moments, weight average,
best weights, generators) for the default model over a 5-core (25.6K items) and a 0-core
(137.2K items) Video_Games catalogue, then times `save_checkpoint` and `load_checkpoint`
to a local folder and to moto's S3 server on 127.0.0.1, in one run, alternating. moto keeps
objects in memory on this machine, so the S3 column is the client's cost (serialising,
s3fs, HTTP), not a network's. Run from the repository root:

    .venv/bin/python bench/checkpoint_storage.py

Prints Markdown table rows for docs/benchmarks.md.
"""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import polars as pl
import requests
import torch

from machine import describe_machine
from sasrec.config import HParams
from sasrec.data import schema
from sasrec.training.checkpoint import load_checkpoint, save_checkpoint
from sasrec.training.state import BestSoFar, TrainingState, rng_state, weight_average
from sasrec.training.train import initial_model

CATALOGUES = {"5-core": 25_600, "0-core": 137_200}
REPEATS = 5


def training_state(num_items: int) -> TrainingState:
    """The state after one optimizer step, so that Adam's moments exist."""
    hparams = HParams(dropout=0.7)  # the size of the state does not depend on it
    train = pl.DataFrame({schema.ITEM_SEQUENCE: [[1, 2, 3]]})
    model = initial_model(train, num_items, hparams)
    optimizer = torch.optim.Adam(model.parameters(), lr=hparams.lr)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    state = TrainingState(model, optimizer, torch.Generator(), BestSoFar(),
                          weight_average(model, hparams.ema_decay))  # fmt: skip
    state.best.state = {k: v.clone() for k, v in model.state_dict().items()}
    return state


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moto = Path(sys.executable).with_name("moto_server")
    server = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(endpoint, timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.1)
    return server, endpoint


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main() -> None:
    server, endpoint = start_moto()
    os.environ |= {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k",
                   "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    boto3.client("s3").create_bucket(Bucket="bench")
    cpu = torch.device("cpu")
    try:
        with tempfile.TemporaryDirectory() as local_dir:
            for name, num_items in CATALOGUES.items():
                state = training_state(num_items)
                checkpoint = state.to_checkpoint({"identity": name}, [rng_state(cpu)])
                targets = {"local": Path(local_dir) / f"{name}.pt",
                           "s3": f"s3://bench/{name}/checkpoint.pt"}  # fmt: skip
                seconds = {(where, op): [] for where in targets for op in ("save", "load")}
                for _ in range(REPEATS):
                    for where, target in targets.items():
                        seconds[where, "save"].append(timed(save_checkpoint, checkpoint, target))
                        seconds[where, "load"].append(timed(load_checkpoint, target, cpu))
                size_mb = (Path(local_dir) / f"{name}.pt").stat().st_size / 1e6
                row = {key: statistics.median(values) for key, values in seconds.items()}
                print(
                    f"| {describe_machine()} | {name}, {num_items:,} items | {size_mb:.0f} MB "
                    f"| {row['local', 'save']:.2f} s | {row['s3', 'save']:.2f} s "
                    f"| {row['local', 'load']:.2f} s | {row['s3', 'load']:.2f} s |"
                )
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
