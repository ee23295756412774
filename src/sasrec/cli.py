"""`sasrec` command line: one subcommand per pipeline step, and `run` for the whole pipeline."""

import argparse
import json
import logging
import sys
from pathlib import Path

from sasrec.config import DEFAULT_PROMOTION_METRIC
from sasrec.data.download import CACHE_DIR_ENV
from sasrec.data.sequences import SPLITS
from sasrec.data.sources import AMAZON_2023_BASE_URL_ENV, DEFAULT_SOURCE
from sasrec.errors import SASRecError, exit_on_error
from sasrec.local_run import RUNNERS
from sasrec.tracking import DEFAULT_EXPERIMENT

HPARAMS_HELP = "JSON object of hyperparameter overrides, e.g. '{\"max_epochs\": 50}'"
SOURCE_HELP = (
    "amazon2023:<Category> (the official raw reviews), amazon2023:<Category>:<0core|5core>"
    "[/<split>] (the official benchmark files), an http(s)://, gs:// or s3:// URL, or a local "
    "path, of a reviews JSONL(.gz), a benchmark CSV(.gz) or a SASRec .txt file"
)


class HelpWithDefaults(argparse.HelpFormatter):
    """Help that ends each option with its default, unless it has none or already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        no_default = default is None or default is False or default == []
        if "default" in text or no_default or default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def _command(
    commands: argparse._SubParsersAction, name: str, summary: str, writes: str
) -> argparse.ArgumentParser:
    """A subcommand whose help says what it does and what it writes."""
    return commands.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}. Writes {writes}.",
        formatter_class=HelpWithDefaults,
    )


def _add_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=DEFAULT_SOURCE, help=SOURCE_HELP)
    parser.add_argument(
        "--amazon-base-url",
        default=None,
        help=f"mirror of the Amazon Reviews 2023 files (default: ${AMAZON_2023_BASE_URL_ENV} "
        "or the official site)",
    )


def _add_split_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kcore", type=int, default=5, help="minimum interactions per user and item; 0: no filter"
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="leave_one_out",
        help="leave_one_out: each user's last item tests, the one before validates; timestamp: "
        "the Amazon Reviews 2023 benchmark's cut points (training before 2021-08-11, "
        "validation until 2022-07-16, then test)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="sasrec", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_download_command(commands)
    _add_sequences_command(commands)
    _add_train_command(commands)
    _add_train_node_command(commands)
    _add_evaluate_command(commands)
    _add_recommend_command(commands)
    _add_run_command(commands)
    return parser


def _add_download_command(commands: argparse._SubParsersAction) -> None:
    """`sasrec download` and its flags."""
    download = _command(
        commands, "download", "fetch reviews into a cache and convert them",
        "OUT/interactions.parquet (and OUT/item_titles.parquet with --with-metadata)",
    )  # fmt: skip
    _add_source_args(download)
    download.add_argument("--out", required=True, type=Path, help="output directory")
    download.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"where downloads are kept (default: ${CACHE_DIR_ENV}, else "
        "$XDG_CACHE_HOME/sasrec, else ~/.cache/sasrec)",
    )
    download.add_argument(
        "--with-metadata",
        action="store_true",
        help="also fetch the category's item metadata: titles for reports (amazon2023 only)",
    )


def _add_sequences_command(commands: argparse._SubParsersAction) -> None:
    """`sasrec sequences` and its flags."""
    sequences = _command(
        commands, "sequences", "build per-user chronological sequences, item ids and splits",
        "OUT/{train,valid,test,item_vocab}.parquet, stats.json and report.html",
    )  # fmt: skip
    sequences.add_argument(
        "--interactions", required=True, type=Path, help="interactions.parquet of `download`"
    )
    sequences.add_argument("--out", required=True, type=Path, help="output directory")
    _add_split_args(sequences)
    # Removed (histories are kept whole); a one-line error for scripts that still pass it.
    sequences.add_argument("--max-len", type=int, default=None, help=argparse.SUPPRESS)


def _add_train_command(commands: argparse._SubParsersAction) -> None:
    """`sasrec train` and its flags."""
    train = _command(
        commands, "train", "train SASRec, tracked in MLflow",
        "the model directory OUT (model.pt, config.json, item_vocab.parquet, training.json) and "
        "an MLflow run with the PyTorch model",
    )  # fmt: skip
    train.add_argument("--sequences", required=True, type=Path, help="output of `sequences`")
    train.add_argument("--out", required=True, type=Path, help="model directory to write")
    train.add_argument("--hparams", default="", help=HPARAMS_HELP + " (default: the recipe)")
    train.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name")
    train.add_argument("--run-name", default=None, help="MLflow run name (default: MLflow's)")
    train.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    train.add_argument(
        "--checkpoint-dir",
        default=None,
        help="per-epoch checkpoint and MLflow run id, resumed by a rerun: a path, gs:// or "
        "s3:// URI (default: OUT.checkpoint)",
    )
    train.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs this job was given: fail at once unless CUDA can use them (0: no check; "
        "hparams device cpu skips it)",
    )
    train.add_argument(
        "--nproc", type=int, default=1, help="data-parallel processes (one per GPU) via torchrun"
    )
    train.add_argument(
        "--register-as",
        default=None,
        help="also register the MLflow model under this name (default: not registered)",
    )
    # A sweep's trial, as the pipeline trains it (passed on to torchrun workers).
    train.add_argument("--parent-run-id", default=None, help=argparse.SUPPRESS)
    train.add_argument("--trial", type=int, default=None, help=argparse.SUPPRESS)
    train.add_argument("--pipeline-run-id", default=None, help=argparse.SUPPRESS)


def _add_train_node_command(commands: argparse._SubParsersAction) -> None:
    """`sasrec train-node`: what each node of a multi-node TrainJob runs."""
    node = _command(
        commands, "train-node", "one node of a multi-node training (a Kubeflow TrainJob's "
        "pod): torchrun over `sasrec train`, the rendezvous from the PET_* variables",
        "the model directory to OUT from the node of rank 0",
    )  # fmt: skip
    node.add_argument("--sequences", required=True, help="output of `sequences`: path or URI")
    node.add_argument("--out", required=True, help="model directory to write: path or URI")
    node.add_argument("--nproc", type=int, default=1, help="processes on this node")
    node.add_argument(
        "train_args", nargs=argparse.REMAINDER, help="after --: the `sasrec train` flags"
    )


def _add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """`sasrec evaluate` and its flags."""
    evaluate = _command(
        commands, "evaluate", "rank each held-out item against the whole catalogue and 100 "
        "sampled items, for the model and two baselines",
        "OUT/metrics.json, OUT/breakdowns.csv and OUT/report.html, and the metrics to the "
        "model's MLflow run",
    )  # fmt: skip
    evaluate.add_argument("--model", required=True, type=Path, help="model directory")
    evaluate.add_argument("--sequences", required=True, type=Path, help="output of `sequences`")
    evaluate.add_argument("--out", required=True, type=Path, help="output directory")
    evaluate.add_argument(
        "--include-history",
        action="store_true",
        help="rank history items too (default: they are excluded from the full-catalogue rank)",
    )


def _add_recommend_command(commands: argparse._SubParsersAction) -> None:
    """`sasrec recommend` and its flags."""
    recommend = _command(
        commands, "recommend", "top-K unseen items for one history, or for every user",
        "JSON to stdout (--history) or OUT/recommendations.parquet (--sequences)",
    )  # fmt: skip
    recommend.add_argument("--model", required=True, type=Path, help="model directory")
    targets = recommend.add_mutually_exclusive_group(required=True)
    targets.add_argument("--history", nargs="+", metavar="ID", help="item ids, oldest first")
    targets.add_argument(
        "--sequences", type=Path, help="output of `sequences`: recommend for all its users"
    )
    recommend.add_argument(
        "--out", type=Path, help="with --sequences: directory to write (no default: required)"
    )
    recommend.add_argument("-k", type=int, default=10, help="items to recommend per user")


def _add_run_command(commands: argparse._SubParsersAction) -> None:
    """`sasrec run` and its flags."""
    run = _command(
        commands, "run", "run the whole KFP pipeline locally (KFP's local runner)",
        "OUTPUT_DIR/model/, evaluation/ (report.html), metrics.json, recommendations.parquet "
        "and the task artifacts under pipeline_root/",
    )  # fmt: skip
    _add_source_args(run)
    run.add_argument("--output-dir", type=Path, default=Path("outputs"), help="output directory")
    _add_split_args(run)
    run.add_argument("--hparams", default="", help=HPARAMS_HELP + " (default: the recipe)")
    run.add_argument(
        "--hparams-grid",
        default="",
        help="a sweep: JSON list of hparams overrides, one trial each, e.g. "
        '\'[{"hidden_size": 64}, {"hidden_size": 128}]\'; the trial with the best '
        "validation NDCG@10 is evaluated (default: one training with --hparams)",
    )
    run.add_argument(
        "--sweep-parallelism",
        type=int,
        default=1,
        help="trials of a sweep training at once on this machine (a cluster's pipeline is "
        "compiled with $SWEEP_PARALLELISM, default 4)",
    )
    run.add_argument(
        "--register-as",
        default=None,
        help="register the model in MLflow under this name and make it the `champion` alias "
        "when it beats the champion on --promotion-metric (default: not registered)",
    )
    run.add_argument(
        "--promotion-metric",
        default=DEFAULT_PROMOTION_METRIC,
        help="test metric that decides the promotion (a tie keeps the champion)",
    )
    run.add_argument(
        "--with-metadata",
        action="store_true",
        help="fetch the category's item metadata for titles in the reports (amazon2023 only)",
    )
    run.add_argument(
        "--runner",
        choices=RUNNERS,
        default="subprocess",
        help="subprocess: tasks in this Python; docker: tasks in the step images "
        "(`make images`), logging to the MLflow server of $MLFLOW_TRACKING_URI",
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other pipeline parameter, checked against the compiled pipeline (JSON for "
        "numbers, bools, dicts; text otherwise), e.g. recommendations_k=20; repeatable "
        "(default: none, the pipeline's defaults)",
    )


def dispatch(args: argparse.Namespace) -> object:
    """Run the chosen subcommand; returns what it produced."""
    from sasrec.config import parse_hparams, read_overrides
    from sasrec.data.steps import download_step, sequences_step

    if args.command == "download":
        return download_step(
            args.source, args.out, args.amazon_base_url, args.cache_dir, args.with_metadata
        )
    if args.command == "sequences":
        if args.max_len is not None:
            raise SASRecError(
                "--max-len was removed: histories are kept whole, since they are also the "
                "items never recommended back; the model reads the last max_len items "
                """(--hparams '{"max_len": 50}' for `sasrec train`)"""
            )
        return sequences_step(args.interactions, args.out, args.kcore, args.split)
    if args.command == "train":
        from sasrec.training.step import train_step

        hparams = parse_hparams(args.hparams)
        return train_step(
            args.sequences, args.out, hparams, args.tracking_uri, args.experiment, args.run_name,
            args.checkpoint_dir, args.nproc, args.register_as, args.gpus, args.parent_run_id,
            args.trial, args.pipeline_run_id,
        )  # fmt: skip
    if args.command == "train-node":
        from sasrec.training.trainjob import train_node

        train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
        return train_node(args.sequences, args.out, args.nproc, train_args)
    if args.command == "evaluate":
        from sasrec.evaluation.step import evaluate_step

        return evaluate_step(
            args.model, args.sequences, args.out, exclude_history=not args.include_history
        )
    if args.command == "recommend":
        if args.history:
            from sasrec.serving.recommend import recommend_for_history

            return recommend_for_history(args.model, args.history, args.k)
        if args.out is None:
            raise SASRecError("--sequences needs --out, the directory to write")
        from sasrec.serving.recommend import recommend_step

        return recommend_step(args.model, args.sequences, args.out, args.k)
    from sasrec.local_run import run_pipeline_locally

    pipeline_args = {
        "kcore": args.kcore,
        "split": args.split,
        "with_item_titles": args.with_metadata,
        "hparams_grid": parse_json_list(args.hparams_grid, "--hparams-grid"),
        "registered_model_name": args.register_as or "",
        "promotion_metric": args.promotion_metric,
    }
    return run_pipeline_locally(
        args.source, args.output_dir, read_overrides(args.hparams), pipeline_args,
        args.amazon_base_url, args.runner, args.param, args.sweep_parallelism, args.verbose,
    )  # fmt: skip


def parse_json_list(text: str, flag: str) -> list:
    """A JSON list given on the command line; empty text is an empty list."""
    try:
        value = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as err:
        raise SASRecError(f"{flag} is not valid JSON ({err}): {text!r}") from err
    if not isinstance(value, list):
        raise SASRecError(f"{flag} must be a JSON list, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sasrec` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with exit_on_error(args.command):
        result = dispatch(args)
        if args.command == "run":
            from sasrec.local_run import quiet_summary

            if args.verbose:
                print(json.dumps(result, indent=2, sort_keys=True))
            print(quiet_summary(args.output_dir))
            return 0
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
