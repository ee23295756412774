"""Every input a step reads, checked in one place per kind of input.

A wrong input (a missing file, a file that is not Parquet, another step's folder, columns
of the wrong name or type, item indices outside the catalogue, a model and sequences of
different catalogues) is one `SASRecError` naming the input and what to give instead,
raised before any work is done.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sasrec.data import schema
from sasrec.errors import SASRecError
from sasrec.io import require_complete


def parquet_columns(path: str | Path, required: list[str], what: str) -> pl.Schema:
    """The schema of a Parquet file that has the `required` columns (its footer only).

    Args:
        path: The file.
        required: Column names it must have.
        what: What the file should be, for the error (e.g. "the output of `sasrec download`").

    Raises:
        SASRecError: when the file is missing, not Parquet, or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise SASRecError(f"{path} does not exist or is not a file; give {what}")
    try:
        found = pl.read_parquet_schema(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise SASRecError(f"{path} is not a readable Parquet file ({err}); give {what}") from err
    missing = [name for name in required if name not in found]
    if missing:
        raise SASRecError(
            f"{path} has no column {', '.join(missing)} (it has {', '.join(found)}); give {what}"
        )
    return pl.Schema(found)


def read_parquet(path: str | Path, expected: pl.Schema, what: str) -> pl.DataFrame:
    """The `expected` columns of a Parquet file, cast to their types (other columns dropped).

    Raises:
        SASRecError: as `parquet_columns`, and when the data cannot be read or a column
            does not convert to its type.
    """
    found = parquet_columns(path, list(expected), what)
    try:
        return pl.read_parquet(path, columns=list(expected)).select(
            pl.col(name).cast(dtype, strict=True) for name, dtype in expected.items()
        )
    except (pl.exceptions.PolarsError, OSError) as err:
        types = {name: found[name] for name in expected}
        raise SASRecError(
            f"{path} cannot be read as columns of types {dict(expected)} (it has {types}: "
            f"{err}); give {what}"
        ) from err


def scan_interactions(path: str | Path) -> pl.LazyFrame:
    """The interactions Parquet file of the download step, lazily, with its schema's types.

    A file without the `split` column (written before splits were carried) gets a null one.

    Raises:
        SASRecError: when the file is missing, not Parquet, lacks a required column, or
            has one of another type.
    """
    what = "the interactions.parquet that `sasrec download` writes"
    required = [schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP]
    found = parquet_columns(path, required, what)
    bad_types = {
        name: found[name]
        for name in (*required, schema.SPLIT)
        if name in found and not _converts(found[name], schema.INTERACTIONS_SCHEMA[name])
    }
    if bad_types:
        raise SASRecError(f"{path} has columns of unexpected types {bad_types}; give {what}")
    frame = pl.scan_parquet(path)
    if schema.SPLIT not in found:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(schema.SPLIT))
    columns = [*required, schema.SPLIT]
    return frame.select(pl.col(name).cast(schema.INTERACTIONS_SCHEMA[name]) for name in columns)


def collect_interactions(frame: pl.LazyFrame, path: str | Path) -> pl.DataFrame:
    """Run a query over `scan_interactions(path)`; data that cannot be read is one error."""
    try:
        return frame.collect()
    except (pl.exceptions.ComputeError, OSError) as err:
        raise SASRecError(
            f"{path} cannot be read ({err}); give the interactions.parquet that "
            "`sasrec download` writes"
        ) from err


def _converts(found: pl.DataType, expected: pl.DataType) -> bool:
    """Whether a column of type `found` holds values of type `expected` (ids: any scalar)."""
    if expected == pl.String:
        return found == pl.String or found.is_integer() or found == pl.Categorical
    return found.is_integer() if expected.is_integer() else found.is_numeric()


def read_item_vocab(path: str | Path, what: str) -> pl.DataFrame:
    """An item vocabulary: indices 1..N (sorted), each with a distinct item id."""
    vocab = read_parquet(path, schema.ITEM_VOCAB_SCHEMA, what).sort(schema.ITEM_INDEX)
    indices_ok = vocab[schema.ITEM_INDEX].to_list() == list(range(1, vocab.height + 1))
    if vocab.is_empty() or not indices_ok or vocab[schema.ITEM_ID].n_unique() != vocab.height:
        raise SASRecError(
            f"{path} is not an item vocabulary (item_index 1..N, one distinct item_id each); "
            f"give {what}"
        )
    return vocab


def catalogue_fingerprint(item_vocab: pl.DataFrame) -> str:
    """A short hash of the item ids in index order: equal exactly when the catalogues are."""
    ids = item_vocab.sort(schema.ITEM_INDEX)[schema.ITEM_ID].to_list()
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return f"{len(ids)} items, sha256 {digest[:12]}"


@dataclass(frozen=True)
class SequenceFiles:
    """The output of the sequences step, read and checked."""

    directory: Path
    train: pl.DataFrame  # schema.TRAIN_SCHEMA
    valid: pl.DataFrame  # schema.HELD_OUT_SCHEMA
    test: pl.DataFrame  # schema.HELD_OUT_SCHEMA
    item_vocab: pl.DataFrame  # schema.ITEM_VOCAB_SCHEMA, sorted by index
    stats: dict[str, Any]

    @property
    def num_items(self) -> int:
        """Catalogue size: item indices run from 1 to this."""
        return self.item_vocab.height


def read_sequences(directory: str | Path) -> SequenceFiles:
    """Read a sequences folder, checking every file and that its item indices are in range.

    Raises:
        SASRecError: naming the folder or file, and what to give instead.
    """
    directory = require_complete(directory, schema.SEQUENCES_STEP)
    what = "the output of `sasrec sequences`"
    vocab = read_item_vocab(directory / schema.ITEM_VOCAB_FILE, what)
    frames = {
        name: read_parquet(directory / name, expected, what)
        for name, expected in (
            (schema.TRAIN_FILE, schema.TRAIN_SCHEMA),
            (schema.VALID_FILE, schema.HELD_OUT_SCHEMA),
            (schema.TEST_FILE, schema.HELD_OUT_SCHEMA),
        )
    }
    for name, frame in frames.items():
        _require_indices_in_catalogue(frame, vocab.height, directory / name)
    stats_path = directory / schema.STATS_FILE
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError) as err:
        raise SASRecError(f"{stats_path} is unreadable ({err}); give {what}") from err
    return SequenceFiles(
        directory,
        frames[schema.TRAIN_FILE],
        frames[schema.VALID_FILE],
        frames[schema.TEST_FILE],
        vocab,
        stats,
    )


def _require_indices_in_catalogue(frame: pl.DataFrame, num_items: int, path: Path) -> None:
    """Every item index of `frame`'s list and target columns is in 1..num_items."""
    lists = [
        frame[name].explode().alias("item")
        for name in frame.columns
        if frame[name].dtype.is_nested()
    ]
    targets = [frame[name].alias("item") for name in frame.columns if name == schema.TARGET]
    items = pl.concat([*lists, *targets]).drop_nulls()  # an empty list explodes to a null
    if items.len() and not (items.min() >= 1 and items.max() <= num_items):
        raise SASRecError(
            f"{path} holds item indices {items.min()}..{items.max()}, outside the catalogue "
            f"1..{num_items} of its item_vocab.parquet; rerun `sasrec sequences`"
        )


def require_same_catalogue(model_dir: str | Path, sequences: SequenceFiles) -> None:
    """Refuse a model trained on another item catalogue than `sequences`.

    Raises:
        SASRecError: naming both folders and both catalogues.
    """
    model_vocab = read_item_vocab(
        Path(model_dir) / schema.ITEM_VOCAB_FILE, "the output of `sasrec train`"
    )
    if not model_vocab.equals(sequences.item_vocab):
        raise SASRecError(
            f"the model {model_dir} was trained on another item catalogue "
            f"({catalogue_fingerprint(model_vocab)}) than the sequences {sequences.directory} "
            f"({catalogue_fingerprint(sequences.item_vocab)}); give the sequences the model "
            "was trained on"
        )
