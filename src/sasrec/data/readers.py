"""Source files to interactions Parquet: streamed in batches, validated, line numbers in errors.

Reviews JSONL (plain or gzipped) is decompressed in a worker thread while polars parses
the previous batch, so the two cores overlap and memory stays bounded by a few batches
whatever the file's size. A batch that polars parses cleanly is taken as is; one that it
rejects is parsed again line by line to count malformed (non-JSON) lines and to name the
line of a missing field or a wrong type.
"""

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from sasrec.data import schema
from sasrec.data.sources import (
    BENCHMARK_CSV,
    RECBOLE_INTER,
    REVIEWS_JSONL,
    SASREC_TEXT,
    is_gzip,
)
from sasrec.errors import SASRecError
from sasrec.io import atomic_path

try:  # ISA-L's inflate: the same API as zlib, about twice as fast
    from isal import isal_zlib as inflate
except ImportError:  # pragma: no cover - isal is a dependency; kept working without its wheel
    import zlib as inflate

MAX_MALFORMED_FRACTION = 0.01  # more malformed lines than this fails the file
# Decompressed bytes parsed at a time: under glibc's 32 MiB mmap threshold, so batches reuse
# heap memory instead of mapping and faulting in fresh pages (half the system time).
BATCH_BYTES = 24 << 20
# Compressed bytes inflated at a time: blocks of about 1.6 MB out stay in cache; 4 MiB in
# took 1.4x as long to inflate the full-size file (docs/benchmarks.md).
BLOCK_BYTES = 512 << 10
# Users are mostly unique per review: a dictionary of them costs time and saves nothing.
_INTERACTIONS_WRITER = {"compression": "zstd", "use_dictionary": [schema.ITEM_ID, schema.SPLIT]}

# Amazon Reviews 2023 fields read, in the interactions schema's order; items are parent_asin.
_REVIEW_FIELDS = {"user_id": schema.USER_ID, "parent_asin": schema.ITEM_ID}
_REVIEWS_READ_SCHEMA = {
    "user_id": pl.String,
    "parent_asin": pl.String,
    "timestamp": pl.Int64,
    "rating": pl.Float64,
}
_REQUIRED_FIELDS = ("user_id", "parent_asin", "timestamp")
_NO_SPLIT = pl.lit(None, dtype=pl.String).alias(schema.SPLIT)  # raw sources come unsplit


@dataclass(frozen=True)
class LineBatch:
    """Whole lines of a file: `data` starts at 1-based line `first_line`, holds `num_lines`."""

    first_line: int
    data: bytes
    num_lines: int


@dataclass
class MalformedLines:
    """Lines that are not JSON objects: how many, and the first one's number."""

    count: int = 0
    first_line: int | None = None

    def add(self, line_number: int) -> None:
        """Count the line `line_number`."""
        self.count += 1
        self.first_line = self.first_line or line_number


def decompressed_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The file's bytes in blocks, gunzipped when it is gzip (several members allowed).

    ISA-L's inflate (`isal`, zlib's API) is used directly, about 2x zlib here
    (docs/benchmarks.md); zlib when the isal wheel is not installed.

    Raises:
        SASRecError: for a corrupt gzip stream or one that ends early.
    """
    with path.open("rb") as file:
        if not is_gzip(path):
            while block := file.read(block_bytes):
                yield block
            return
        inflater = inflate.decompressobj(16 + inflate.MAX_WBITS)
        read = 0
        try:
            while chunk := file.read(block_bytes):
                read += len(chunk)
                while chunk:
                    yield inflater.decompress(chunk)
                    chunk = b""
                    if inflater.eof and inflater.unused_data:  # the next gzip member
                        chunk = inflater.unused_data
                        inflater = inflate.decompressobj(16 + inflate.MAX_WBITS)
        except inflate.error as err:
            raise SASRecError(f"{path}: corrupt gzip data near byte {read}: {err}") from err
        if not inflater.eof:
            raise SASRecError(
                f"{path}: truncated gzip file (the stream ends early, after {read} bytes); "
                "download it again"
            )


def line_batches(
    path: Path, batch_bytes: int = BATCH_BYTES, block_bytes: int = BLOCK_BYTES
) -> Iterator[LineBatch]:
    """Whole-line batches of about `batch_bytes` of a plain or gzipped file.

    Each decompressed block is counted as it comes and copied once, into its batch: the
    batch is cut after the last line end of the block that fills it.

    Raises:
        SASRecError: for a corrupt or truncated gzip stream.
    """
    line = 1
    pending: list[bytes] = []
    pending_bytes = pending_lines = 0
    for block in decompressed_blocks(path, block_bytes):
        block_lines = block.count(b"\n")
        pending_bytes += len(block)
        if pending_bytes < batch_bytes or block_lines == 0:  # no line end: the batch grows
            pending.append(block)
            pending_lines += block_lines
            continue
        cut = block.rfind(b"\n") + 1
        data = b"".join([*pending, memoryview(block)[:cut]])
        yield LineBatch(line, data, pending_lines + block_lines)
        line += pending_lines + block_lines
        pending, pending_bytes, pending_lines = [block[cut:]], len(block) - cut, 0
    tail = b"".join(pending)
    if tail.strip():
        tail = tail if tail.endswith(b"\n") else tail + b"\n"
        yield LineBatch(line, tail, tail.count(b"\n"))


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """Iterate `items` one step ahead in a worker thread; its exceptions are raised here.

    While the caller works on one item the worker produces the next. When the caller
    stops early, the worker finishes the step it is on and nothing is left running.
    """
    done = object()
    with ThreadPoolExecutor(max_workers=1) as worker:
        upcoming = worker.submit(next, items, done)
        while (item := upcoming.result()) is not done:
            upcoming = worker.submit(next, items, done)
            yield item


@contextmanager
def _interactions_file(out_path: Path) -> Iterator[Callable[[pl.DataFrame], None]]:
    """A function appending interactions frames to `out_path`, which appears only when complete.

    The file is written beside it and renamed into place when the block ends without error.
    """
    arrow_schema = pl.DataFrame(schema=schema.INTERACTIONS_SCHEMA).to_arrow().schema
    with (
        atomic_path(out_path) as tmp,
        pq.ParquetWriter(tmp, arrow_schema, **_INTERACTIONS_WRITER) as writer,
    ):
        yield lambda frame: writer.write_table(frame.to_arrow().cast(arrow_schema))


def convert_to_interactions(
    path: Path, file_format: str, out_path: Path, split: str | None = None
) -> dict[str, int]:
    """Write a local source file of `file_format` as interactions Parquet (atomically).

    `split` labels every row (a file of an official split); raw files are unsplit.
    """
    if file_format == REVIEWS_JSONL:
        return convert_reviews_jsonl(path, out_path)
    if file_format == BENCHMARK_CSV:
        return convert_benchmark_csv(path, out_path, split)
    whole_file_readers = {SASREC_TEXT: read_sasrec_text, RECBOLE_INTER: read_recbole_inter}
    if file_format not in whole_file_readers:
        raise SASRecError(f"unsupported format {file_format!r} for {path}")
    frame = whole_file_readers[file_format](path)
    frame = frame.with_columns(pl.lit(split, dtype=pl.String).alias(schema.SPLIT))
    with atomic_path(out_path) as tmp:
        frame.write_parquet(tmp)
    return {"num_lines": frame.height, "num_interactions": frame.height, "num_malformed_lines": 0}


def _read_csv(path: Path, what: str, data: bytes | None = None, **options: Any) -> pl.DataFrame:
    """Polars' CSV reader of `path` (or `data` from it), its errors naming file and format."""
    try:
        frame = pl.read_csv(path if data is None else data, **options)
    except pl.exceptions.NoDataError as err:
        raise SASRecError(f"{path} holds no interactions (empty file)") from err
    except pl.exceptions.PolarsError as err:
        first_line = str(err).strip().splitlines()[0]
        raise SASRecError(f"cannot read {path} as {what}: {first_line}") from err
    if frame.is_empty():
        raise SASRecError(f"{path} holds no interactions (a header only)")
    return frame


def _require_columns(frame: pl.DataFrame, path: Path, required: tuple[str, ...]) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise SASRecError(
            f"{path}: no column {', '.join(missing)}; it has {', '.join(frame.columns)}"
        )
    nulls = frame.select(pl.sum_horizontal(pl.col(required).null_count())).item()
    if nulls:
        raise SASRecError(f"{path}: {nulls} rows lack one of {', '.join(required)}")


def _interactions(frame: pl.DataFrame, path: Path, timestamp: pl.Expr) -> pl.DataFrame:
    """The interactions columns of a text table with `user_id`, `item_id`, maybe `rating`."""
    rating = pl.col("rating") if "rating" in frame.columns else pl.lit(None)
    try:
        return frame.select(
            pl.col("user_id").alias(schema.USER_ID),
            pl.col("item_id").alias(schema.ITEM_ID),
            timestamp.alias(schema.TIMESTAMP),
            rating.cast(pl.Float64).alias(schema.RATING),
        )
    except pl.exceptions.InvalidOperationError as err:
        raise SASRecError(f"{path}: a timestamp or rating is not a number ({err})") from err


# No times in these files: the line number keeps each user's chronological order.
_LINE_ORDER = pl.int_range(pl.len(), dtype=pl.Int64)


def read_sasrec_text(path: Path) -> pl.DataFrame:
    """A SASRec text file (`user item` per line); line numbers as timestamps."""
    frame = _read_csv(
        path,
        "SASRec text `user item`",
        separator=" ",
        has_header=False,
        new_columns=["user_id", "item_id"],
        schema_overrides=[pl.String, pl.String],
    )
    if frame.width != 2:
        raise SASRecError(f"{path}: expected two space-separated columns `user item` per line")
    _require_columns(frame, path, ("user_id", "item_id"))
    return _interactions(frame, path, _LINE_ORDER)


_BENCHMARK_REQUIRED = ("user_id", "parent_asin", "timestamp")
_BENCHMARK_KEPT = (*_BENCHMARK_REQUIRED, "rating")


def convert_benchmark_csv(path: Path, out_path: Path, split: str | None) -> dict[str, int]:
    """Write an official benchmark CSV as interactions Parquet labelled `split`, in batches.

    Of the columns user_id,parent_asin,rating,timestamp[,history] the first four are kept:
    the `history` of the `_w_his` splits repeats every earlier item of the user on each
    row, so it grows with the square of a user's length (gigabytes at 0-core), and the
    sequences step rebuilds it from the rows anyway.

    Raises:
        SASRecError: naming the file for an empty file, a missing column, a missing value,
            or a timestamp or rating that is not a number; nothing is left at `out_path`.
    """
    what = "an Amazon Reviews 2023 benchmark CSV"
    header, kept = b"", None  # the first batch is read whole; later ones, the columns kept
    num_interactions = 0
    with _interactions_file(out_path) as write:
        for batch in prefetched(line_batches(path)):
            # Every column as text first: ids stay ids, types are checked by `_interactions`.
            frame = _read_csv(path, what, header + batch.data, columns=kept, infer_schema=False)
            if kept is None:
                header = batch.data[: batch.data.index(b"\n") + 1]
                kept = [name for name in frame.columns if name in _BENCHMARK_KEPT]
            _require_columns(frame, path, _BENCHMARK_REQUIRED)
            frame = _interactions(
                frame.rename({"parent_asin": "item_id"}), path, pl.col("timestamp").cast(pl.Int64)
            ).with_columns(pl.lit(split, dtype=pl.String).alias(schema.SPLIT))
            write(frame)
            num_interactions += frame.height
        if num_interactions == 0:
            raise SASRecError(f"{path} holds no interactions (empty file)")
    return {
        "num_lines": num_interactions,
        "num_interactions": num_interactions,
        "num_malformed_lines": 0,
    }


def read_recbole_inter(path: Path) -> pl.DataFrame:
    """A RecBole atomic .inter file: tab-separated, `user_id:token item_id:token ...`.

    Without a timestamp column the line number orders each user's items.
    """
    frame = _read_csv(path, "a RecBole .inter file", separator="\t", infer_schema=False)
    frame = frame.rename({column: column.split(":", 1)[0] for column in frame.columns})
    _require_columns(frame, path, ("user_id", "item_id"))
    timestamp = (
        pl.col("timestamp").cast(pl.Float64).cast(pl.Int64)
        if "timestamp" in frame.columns
        else _LINE_ORDER
    )
    return _interactions(frame, path, timestamp)


def convert_reviews_jsonl(path: Path, out_path: Path) -> dict[str, int]:
    """Write the reviews of an Amazon Reviews 2023 JSONL(.gz) file as interactions Parquet.

    Returns:
        `num_lines`, `num_interactions`, `num_malformed_lines`.

    Raises:
        SASRecError: naming the file (and the line where known) for a corrupt or truncated
            gzip, an empty file, a missing required field, a wrong type, or more than 1% of
            lines malformed; nothing is left at `out_path`.
    """
    malformed = MalformedLines()
    num_lines = num_interactions = 0
    with _interactions_file(out_path) as write:
        for batch in prefetched(line_batches(path)):
            frame = _parse_reviews(batch, path, malformed)
            write(frame)
            num_lines += batch.num_lines
            num_interactions += frame.height
        if num_interactions == 0:
            raise SASRecError(f"{path} holds no reviews ({num_lines} lines)")
        if malformed.count > MAX_MALFORMED_FRACTION * num_lines:
            raise SASRecError(
                f"{path}: {malformed.count} of {num_lines} lines are not JSON objects (more "
                f"than {MAX_MALFORMED_FRACTION:.0%}), the first at line {malformed.first_line}"
            )
    return {
        "num_lines": num_lines,
        "num_interactions": num_interactions,
        "num_malformed_lines": malformed.count,
    }


def _parse_reviews(batch: LineBatch, path: Path, malformed: MalformedLines) -> pl.DataFrame:
    """One batch as interactions: polars' parser, or line by line when it refuses."""
    try:
        frame = pl.read_ndjson(batch.data, schema=_REVIEWS_READ_SCHEMA)
        if not frame.select(pl.sum_horizontal(pl.col(_REQUIRED_FIELDS).null_count())).item():
            return frame.rename(_REVIEW_FIELDS).with_columns(_NO_SPLIT)
    except pl.exceptions.PolarsError:
        pass
    rows = []
    for offset, line in enumerate(batch.data.split(b"\n")[:-1]):
        if line.strip():
            record = _review_record(line, path, batch.first_line + offset, malformed)
            if record is not None:
                rows.append(record)
    frame = pl.DataFrame(rows, schema=_REVIEWS_READ_SCHEMA, orient="row")
    return frame.rename(_REVIEW_FIELDS).with_columns(_NO_SPLIT)


def _review_record(
    line: bytes, path: Path, line_number: int, malformed: MalformedLines
) -> tuple | None:
    """(user, item, timestamp, rating) of one line; None for a malformed line."""
    try:
        review = json.loads(line)
    except ValueError:
        review = None
    if not isinstance(review, dict):
        malformed.add(line_number)
        return None
    for field in _REQUIRED_FIELDS:
        if review.get(field) is None:
            raise SASRecError(
                f"{path}, line {line_number}: the required field {field!r} is missing"
            )
    user, item, timestamp, rating = (review.get(field) for field in _REVIEWS_READ_SCHEMA)
    for field, value in (("user_id", user), ("parent_asin", item)):
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise SASRecError(
                f"{path}, line {line_number}: {field} is {value!r}, expected a string"
            )
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise SASRecError(
            f"{path}, line {line_number}: timestamp is {timestamp!r}, expected integer "
            "milliseconds since the epoch"
        )
    if rating is not None and (not isinstance(rating, int | float) or isinstance(rating, bool)):
        raise SASRecError(f"{path}, line {line_number}: rating is {rating!r}, expected a number")
    return str(user), str(item), timestamp, rating
