"""Every step after download, given a wrong input or output, fails the same clean way.

One line on stderr naming the input and what to do, exit code 2, no traceback, and not a
byte written or changed anywhere: in the CLI (`sasrec <step>`) and in the KFP components.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from kfp.dsl import Artifact, Dataset, Metrics, Model

from components.evaluate import evaluate as evaluate_component
from components.sequences import sequences as sequences_component
from helpers import cyclic_reviews, write_reviews_jsonl_gz
from sasrec.cli import main
from sasrec.config import parse_hparams
from sasrec.data.steps import download_step, sequences_step
from sasrec.registry.steps import promote_step
from sasrec.training.train import train_sasrec

TINY = {"max_epochs": 1, "hidden_size": 8, "batch_size": 64, "num_negatives": 4}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good inputs of every kind, and bad ones made from them."""
    root = tmp_path_factory.mktemp("inputs")
    for name, num_items in (("", 40), ("other_", 30)):  # two catalogues
        source = write_reviews_jsonl_gz(
            root / f"{name}reviews.jsonl.gz", cyclic_reviews(num_items=num_items)
        )
        download_step(str(source), root / f"{name}raw", cache_dir=root / "cache")
        sequences_step(root / f"{name}raw" / "interactions.parquet", root / f"{name}seq", kcore=0)
    train_sasrec(root / "seq", root / "model", parse_hparams(TINY))
    (root / "notes.txt").write_text("a file, not a folder\n")
    (root / "not_parquet.parquet").write_text("PAR1? no\n")
    interactions = pl.read_parquet(root / "raw" / "interactions.parquet")
    interactions.drop("item_id").write_parquet(root / "no_item_column.parquet")
    interactions.with_columns(pl.lit("yesterday").alias("timestamp")).write_parquet(
        root / "text_timestamps.parquet"
    )
    damaged = root / "damaged_pages.parquet"  # a sound footer over damaged data pages
    interactions.write_parquet(damaged, compression="uncompressed")
    data = bytearray(damaged.read_bytes())
    data[100 : len(data) // 2] = b"\xff" * (len(data) // 2 - 100)
    damaged.write_bytes(bytes(data))
    broken = {
        "seq_train_not_parquet": ("train.parquet", lambda path: path.write_text("no")),
        "seq_valid_no_target": (
            "valid.parquet",
            lambda path: pl.read_parquet(path).drop("target").write_parquet(path),
        ),
        "seq_test_outside_catalogue": (
            "test.parquet",
            lambda path: (
                pl.read_parquet(path).with_columns(pl.col("target") + 1000).write_parquet(path)
            ),
        ),
        "model_weights_corrupt": ("model.pt", lambda path: path.write_bytes(b"\x80garbage")),
    }
    for name, (file, damage) in broken.items():
        shutil.copytree(root / name.split("_")[0], root / name)
        damage(root / name / file)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


SEQUENCES_CASES = {
    "missing file": (["--interactions", "{w}/missing.parquet"], ["missing.parquet does not exist"]),
    "a folder": (["--interactions", "{w}/raw"], ["raw does not exist or is not a file"]),
    "not Parquet": (
        ["--interactions", "{w}/not_parquet.parquet"],
        ["not_parquet.parquet is not a readable Parquet file", "sasrec download"],
    ),
    "no item column": (
        ["--interactions", "{w}/no_item_column.parquet"],
        ["no_item_column.parquet has no column item_id"],
    ),
    "damaged pages": (
        ["--interactions", "{w}/damaged_pages.parquet"],
        ["damaged_pages.parquet cannot be read", "give the interactions.parquet"],
    ),
    "text timestamps": (
        ["--interactions", "{w}/text_timestamps.parquet"],
        ["text_timestamps.parquet has columns of unexpected types", "timestamp"],
    ),
    "negative kcore": (["--kcore", "-2"], ["kcore must be 0 (no filter) or more, got -2"]),
    "output is a file": (
        ["--interactions", "{w}/raw/interactions.parquet", "--out", "{w}/notes.txt"],
        ["notes.txt is a file, not a directory"],
    ),
    "output is the model": (
        ["--interactions", "{w}/raw/interactions.parquet", "--out", "{w}/model"],
        ["model already holds the output of `sasrec train`", "give a new or empty directory"],
    ),
}
TRAIN_CASES = {
    "sequences missing": (["--sequences", "{w}/nothing"], ["nothing is not a directory"]),
    "download's folder": (["--sequences", "{w}/raw"], ["raw is incomplete (no _SUCCESS)"]),
    "train's folder": (
        ["--sequences", "{w}/model"],
        ["model is the output of `sasrec train`, not of `sasrec sequences`"],
    ),
    "train.parquet not Parquet": (
        ["--sequences", "{w}/seq_train_not_parquet"],
        ["train.parquet is not a readable Parquet file"],
    ),
    "valid.parquet without target": (
        ["--sequences", "{w}/seq_valid_no_target"],
        ["valid.parquet has no column target"],
    ),
    "test items outside the catalogue": (
        ["--sequences", "{w}/seq_test_outside_catalogue"],
        ["test.parquet holds item indices", "outside the catalogue 1..40"],
    ),
    "negative processes": (["--sequences", "{w}/seq", "--nproc", "-1"], ["--nproc must be 0 or 1"]),
    "output is a file": (
        ["--sequences", "{w}/seq", "--out", "{w}/notes.txt/model"],
        ["notes.txt is a file, not a directory"],
    ),
    "output is the sequences": (
        ["--sequences", "{w}/seq", "--out", "{w}/other_seq"],
        ["other_seq already holds the output of `sasrec sequences`"],
    ),
    **{
        f"hparams {text}": (["--sequences", "{w}/seq", "--hparams", text], [message])
        for text, message in (
            ('{"lr": Infinity}', "hparam lr=inf is out of range"),
            ('{"lr": NaN}', "hparam lr=nan is out of range"),
            ('{"dropout": 1.5}', "hparam dropout=1.5 is out of range; allowed: [0.0, 1.0)"),
            ('{"batch_size": 0}', "hparam batch_size=0 is out of range"),
            ('{"max_epochs": 2.5}', "hparam max_epochs=2.5 must be of type int"),
        )
    },
}
MODEL_CASES = {  # evaluate and recommend read the same inputs
    "model is the sequences": (
        ["--model", "{w}/seq", "--sequences", "{w}/seq"],
        ["seq is the output of `sasrec sequences`, not of `sasrec train`"],
    ),
    "sequences is the model": (
        ["--model", "{w}/model", "--sequences", "{w}/model"],
        ["model is the output of `sasrec train`, not of `sasrec sequences`"],
    ),
    "another catalogue": (
        ["--model", "{w}/model", "--sequences", "{w}/other_seq"],
        [
            "was trained on another item catalogue (40 items, sha256",
            "than the sequences",
            "(30 items, sha256",
            "give the sequences the model was trained on",
        ],
    ),
    "corrupt weights": (
        ["--model", "{w}/model_weights_corrupt", "--sequences", "{w}/seq"],
        ["model_weights_corrupt is not a model directory of `sasrec train`"],
    ),
    "output is a file": (
        ["--model", "{w}/model", "--sequences", "{w}/seq", "--out", "{w}/notes.txt"],
        ["notes.txt is a file, not a directory"],
    ),
    "output is the sequences": (
        ["--model", "{w}/model", "--sequences", "{w}/seq", "--out", "{w}/seq"],
        ["seq already holds the output of `sasrec sequences`"],
    ),
}
CASES = [
    *((("sequences", *case), name) for name, case in SEQUENCES_CASES.items()),
    *((("train", *case), name) for name, case in TRAIN_CASES.items()),
    *((("evaluate", *case), name) for name, case in MODEL_CASES.items()),
    *((("recommend", *case), name) for name, case in MODEL_CASES.items()),
    (("run", ["--output-dir", "{w}/notes.txt"], ["notes.txt is a file"]), "output is a file"),
    (("run", ["--hparams", '{"lr": NaN}'], ["hparam lr=nan is out of range"]), "NaN lr"),
    *(
        (("run", ["--output-dir", "{w}/new_output", "--param", param], [message]), name)
        for name, param, message in (
            ("unknown param", "epochs=3", "--param epochs: the pipeline has no such parameter"),
            ("param of a flag", "kcore=3", "--param kcore: set it with --kcore instead"),
            ("param type", "recommendations_k=many", "--param recommendations_k=many: not valid"),
            ("param form", "recommendations_k", "expected NAME=VALUE"),
        )
    ),
]
DEFAULT_OUT = {"sequences": "--out", "train": "--out", "evaluate": "--out", "recommend": "--out"}


@pytest.mark.parametrize(
    ("command", "args", "fragments"),
    [case for case, _ in CASES],
    ids=[f"{c[0]}: {n}" for c, n in CASES],
)
def test_a_bad_input_is_one_line_exit_2_and_nothing_written(
    work, capsys, mlflow_uri, command, args, fragments
):
    args = [arg.replace("{w}", str(work)) for arg in args]
    if command in DEFAULT_OUT and "--out" not in args:
        args += ["--out", str(work / "new_output")]
    if command == "sequences" and "--interactions" not in args:
        args += ["--interactions", str(work / "raw" / "interactions.parquet")]
    before = snapshot(work)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([command, *args])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    error = stderr.strip().splitlines()[-1]
    assert error.startswith(f"sasrec {command}: error: "), stderr
    for fragment in fragments:
        assert fragment in error
    assert snapshot(work) == before  # nothing written, nothing changed
    assert not (work / "new_output").exists()


def test_the_cli_process_exits_2_with_one_line(work):
    result = subprocess.run(
        [
            sys.executable, "-m", "sasrec.cli", "evaluate", "--model", str(work / "model"),
            "--sequences", str(work / "other_seq"), "--out", str(work / "new_output"),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().startswith("sasrec evaluate: error: the model ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_components_fail_as_the_cli_does(work, capsys):
    # The functions KFP runs in the pod, called with artifacts as the executor builds them.
    def artifact(kind: type[Artifact], path: Path) -> Artifact:
        return kind(name=path.name, uri=str(path))

    promote_step(work / "model", work / "seq", work / "promotion", None)  # a real decision
    before = snapshot(work)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_component.python_func(
            model=artifact(Model, work / "model"),
            sequences=artifact(Dataset, work / "other_seq"),
            promotion=artifact(Artifact, work / "promotion"),
            scores=[],
            mlflow_tracking_uri="",
            evaluation=artifact(Artifact, work / "new_output"),
            metrics=artifact(Metrics, work / "metrics.json"),
            report=artifact(Artifact, work / "report.html"),
        )
    assert exit_info.value.code == 2
    assert "sasrec evaluate: error: the model " in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        sequences_component.python_func(
            interactions=artifact(Dataset, work / "model"),
            kcore=0, split="leave_one_out",
            sequences=artifact(Dataset, work / "new_output"),
            sequence_stats=artifact(Metrics, work / "stats.json"),
            report=artifact(Artifact, work / "report.html"),
        )  # fmt: skip
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("sasrec sequences: error: ") and "interactions.parquet" in error
    assert snapshot(work) == before
    assert not (work / "new_output").exists()


def test_a_good_rerun_may_replace_its_own_earlier_output(work, tmp_path):
    # The refusals above do not stop the normal case: a step writing over its own output.
    out = tmp_path / "eval"
    for _ in range(2):
        main(["evaluate", "--model", str(work / "model"), "--sequences", str(work / "seq"),
              "--out", str(out)])  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["num_test_users"] > 0
