"""Serving speed: the registered pyfunc behind `mlflow models serve`, over HTTP on 127.0.0.1.

Logs an untrained model of the 5-core Video_Games size (25.6K items, the default shape;
the cost of serving does not depend on the weights) to a fresh MLflow store, starts
`mlflow models serve` on it (or MLServer with `--server mlserver`), and from a separate
client process sends single-history requests open-loop at increasing rates: each request
leaves at its scheduled time whether or not earlier ones have come back, and its latency
counts from that time, so a server that falls behind shows it. Then batched requests of
1 to 256 histories, each scored in one forward pass. Run from the repository root:

    .venv/bin/python bench/serving.py                    # mlflow models serve
    .venv/bin/python bench/serving.py --server mlserver  # needs `make mlserver-env`

Prints Markdown table rows for docs/benchmarks.md.
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import requests
import torch

from machine import describe_machine
from sasrec.config import HParams
from sasrec.data import schema
from sasrec.model import SASRec
from sasrec.model_dir import save_model_dir
from sasrec.serving.deploy import prepare_mlserver
from sasrec.serving.logged_model import log_recommender_model
from sasrec.training.train import model_config

REPO = Path(__file__).resolve().parents[1]
P99_TARGET_MS = 50.0


def synthetic_model_dir(out_dir: Path, num_items: int) -> list[str]:
    """An untrained model directory of `num_items` items; returns the item ids."""
    seq_dir = out_dir.with_name("seq")
    seq_dir.mkdir(parents=True)
    item_ids = [f"B{i:09d}" for i in range(1, num_items + 1)]
    pl.DataFrame(
        {schema.ITEM_INDEX: np.arange(1, num_items + 1, dtype=np.int32), schema.ITEM_ID: item_ids}
    ).write_parquet(seq_dir / schema.ITEM_VOCAB_FILE)
    popularity = torch.from_numpy(1.0 / np.arange(1, num_items + 2) ** 0.8)
    model = SASRec(model_config(num_items, HParams(dropout=0.0)))
    save_model_dir(model, seq_dir, {}, out_dir, popularity)
    return item_ids


def histories(item_ids: list[str], count: int, seed: int) -> list[list[str]]:
    """Random histories of 1 to 50 items (5-core lengths are mostly short)."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(1 + rng.geometric(1 / 8, count), 50)
    return [list(rng.choice(item_ids, length)) for length in lengths]


def body(server: str, rows: list[list[str]], k: int = 10) -> dict:
    if server == "mlflow":
        return {"dataframe_records": [{"history": h} for h in rows], "params": {"k": k}}
    return {
        "inputs": [{"name": "history", "datatype": "BYTES", "shape": [len(rows), 1],
                    "parameters": {"content_type": "pd_json"},
                    "data": [json.dumps(h) for h in rows]}],
        "parameters": {"k": k},
    }  # fmt: skip


def open_loop(url: str, bodies: list[dict], rate: float, results: multiprocessing.Queue) -> None:
    """Client process: send `bodies` at `rate` per second; put (latencies ms, errors, seconds)."""
    session_pool = ThreadPoolExecutor(max_workers=64)
    sessions: dict[int, requests.Session] = {}

    def send(payload: dict, scheduled: float) -> float | None:
        import threading

        session = sessions.setdefault(threading.get_ident(), requests.Session())
        while (wait := scheduled - time.perf_counter()) > 0:
            time.sleep(wait)
        answer = session.post(url, json=payload, timeout=30)
        return (time.perf_counter() - scheduled) * 1000 if answer.ok else None

    start = time.perf_counter() + 0.2
    futures = [
        session_pool.submit(send, payload, start + i / rate) for i, payload in enumerate(bodies)
    ]
    latencies = [future.result() for future in futures]
    elapsed = time.perf_counter() - start
    ok = [latency for latency in latencies if latency is not None]
    results.put((ok, len(latencies) - len(ok), elapsed))


def measure(url: str, bodies: list[dict], rate: float) -> tuple[list[float], int, float]:
    results: multiprocessing.Queue = multiprocessing.Queue()
    client = multiprocessing.Process(target=open_loop, args=(url, bodies, rate, results))
    client.start()
    outcome = results.get()
    client.join()
    return outcome


def start_server(
    server: str, model_uri: str, work: Path, port: int, workers: int, threads: int
) -> tuple[subprocess.Popen, str]:
    if server == "mlflow":
        bin_dir = Path(sys.executable).parent
        command = [str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
                   "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]  # fmt: skip
        ready, url = f"http://127.0.0.1:{port}/ping", f"http://127.0.0.1:{port}/invocations"
    else:
        bin_dir = REPO / ".venv-mlserver" / "bin"
        settings = prepare_mlserver(model_uri, work / "mlserver", "sasrec", port)
        command = [str(bin_dir / "mlserver"), "start", str(settings)]
        url = f"http://127.0.0.1:{port}/v2/models/sasrec/infer"
        ready = f"http://127.0.0.1:{port}/v2/models/sasrec/ready"
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                        "OMP_NUM_THREADS": str(threads)}  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=(work / "server.log").open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(ready, timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            time.sleep(0.5)
    raise SystemExit(f"{server} did not start: {(work / 'server.log').read_text()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=25_600)
    parser.add_argument("--server", choices=("mlflow", "mlserver"), default="mlflow")
    parser.add_argument("--rates", default="25,50,100,150,200,300")
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate")
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--workers", type=int, default=2, help="mlflow: uvicorn workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    item_ids = synthetic_model_dir(work / "model", args.items)
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    with mlflow.start_run():
        model_uri = log_recommender_model(work / "model")
    process, url = start_server(args.server, model_uri, work, args.port, args.workers, args.threads)
    setup = (
        f"mlflow models serve, {args.workers} workers"
        if args.server == "mlflow"
        else "MLServer, 1 inference worker"
    ) + f", {args.threads} torch thread{'s' if args.threads > 1 else ''} each"
    machine = describe_machine()
    try:
        warmup = [body(args.server, [h]) for h in histories(item_ids, 50, seed=1)]
        measure(url, warmup, 20)
        held = 0.0
        for rate in map(float, args.rates.split(",")):
            count = int(rate * args.seconds)
            bodies = [body(args.server, [h]) for h in histories(item_ids, count, seed=int(rate))]
            latencies, errors, elapsed = measure(url, bodies, rate)
            p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2
            achieved = len(latencies) / elapsed
            kept_up = errors == 0 and p99 < P99_TARGET_MS and achieved >= 0.95 * rate
            held = rate if kept_up else held
            print(f"| {machine} | {setup}, 1 history | {rate:.0f}/s | {achieved:.0f}/s "
                  f"| {p50:.1f} ms | {p99:.1f} ms | {errors} |", flush=True)  # fmt: skip
        print(f"highest rate held (p99 < {P99_TARGET_MS:.0f} ms, no errors): {held:.0f}/s")
        for batch in (1, 16, 64, 256):
            bodies = [body(args.server, histories(item_ids, batch, seed=batch + i))
                      for i in range(20)]  # fmt: skip
            latencies, errors, _ = measure(url, bodies, 1.0)  # one at a time: no queueing
            p50 = float(np.percentile(latencies, 50))
            row = (f"| {machine} | {setup}, batch of {batch} | {p50:.1f} ms per request "
                   f"| {p50 / batch:.2f} ms per history | {errors} errors |")  # fmt: skip
            print(row, flush=True)
    finally:
        os.killpg(process.pid, 9)
        process.wait()


if __name__ == "__main__":
    main()
