"""Bad source files: each is one line on stderr naming the file (and the line where known),
exit code 2, and nothing at the output path. Malformed lines up to 1% are counted instead."""

import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from sasrec.data.readers import decompressed_blocks, line_batches, prefetched
from sasrec.errors import SASRecError


def review(index: int, **fields: object) -> dict:
    record = {
        "user_id": f"u{index % 7}",
        "parent_asin": f"i{index % 11}",
        "timestamp": 1_600_000_000_000 + index,
        "rating": 5.0,
        "title": "Great game",
        "text": "Plays well. " * 20,
    }
    record.update(fields)
    return record


def jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def download(source: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sasrec.cli", "download", "--source", str(source)]
    return subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess, out: Path, *fragments: str) -> None:
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("sasrec download: error: ")
    for fragment in fragments:
        assert fragment in error, error
    assert not out.exists() or list(out.iterdir()) == []  # no output, no temporary left


GOOD = jsonl([review(i) for i in range(2000)])


def corrupt_gzip(data: bytes) -> bytes:
    packed = bytearray(gzip.compress(data))
    middle = len(packed) // 2
    packed[middle : middle + 64] = bytes(64)  # zeros in the middle of the deflate stream
    return bytes(packed)


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("corrupt.jsonl.gz", corrupt_gzip(GOOD), ["corrupt.jsonl.gz", "gzip"]),
        ("truncated.jsonl.gz", gzip.compress(GOOD)[:3000], ["truncated gzip file"]),
        ("empty.jsonl", b"", ["empty.jsonl holds no reviews (0 lines)"]),
        ("empty.jsonl.gz", gzip.compress(b""), ["empty.jsonl.gz holds no reviews"]),
        (
            "notjson.jsonl",
            GOOD[:2000] + b"not json\n" + jsonl([review(i) for i in range(5)]) + b"{oops\n",
            [
                "notjson.jsonl: 2 of",
                "lines are not JSON objects (more than 1%)",
                "the first at line",
            ],
        ),
        (
            "noitem.jsonl",
            jsonl([review(0), review(1), {"user_id": "u", "timestamp": 1}, review(3)]),
            ["noitem.jsonl, line 3: the required field 'parent_asin' is missing"],
        ),
        (
            "badtime.jsonl",
            jsonl([review(0), review(1, timestamp="yesterday")]),
            ["badtime.jsonl, line 2: timestamp is 'yesterday', expected integer milliseconds"],
        ),
        (
            "badrating.jsonl.gz",
            gzip.compress(jsonl([review(0), review(1), review(2, rating="five")])),
            ["badrating.jsonl.gz, line 3: rating is 'five', expected a number"],
        ),
        ("data.parquet", b"PAR1", ["cannot tell the format of", "data.parquet"]),
    ],
)
def test_bad_file_is_one_line_error_and_writes_nothing(
    tmp_path: Path, name: str, content: bytes, fragments: list[str]
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    out = tmp_path / "out"
    assert_one_line_error(download(source, out), out, *fragments)


def test_few_malformed_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    lines = [json.dumps(review(i)) for i in range(300)]
    lines[17] = "{truncated"
    lines[250] = "[1, 2]"
    source = tmp_path / "mostly_good.jsonl.gz"
    source.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    result = download(source, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts == {"num_lines": 300, "num_interactions": 298, "num_malformed_lines": 2}
    frame = pl.read_parquet(tmp_path / "out" / "interactions.parquet")
    assert frame["timestamp"].to_list() == [
        1_600_000_000_000 + i for i in range(300) if i not in (17, 250)
    ]


def test_numeric_ids_are_read_as_strings(tmp_path: Path) -> None:
    source = tmp_path / "numeric.jsonl"
    source.write_bytes(jsonl([review(0, user_id=42, parent_asin=7), review(1)]))
    assert download(source, tmp_path / "out").returncode == 0
    frame = pl.read_parquet(tmp_path / "out" / "interactions.parquet")
    assert frame.row(0)[:2] == ("42", "7")


def test_line_batches_keep_whole_lines_and_count_them(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt.gz"
    lines = [f"line {i} " + "x" * (i % 13) for i in range(1, 101)]
    path.write_bytes(gzip.compress(("\n".join(lines)).encode()))  # no final newline
    batches = list(line_batches(path, batch_bytes=50, block_bytes=16))
    assert len(batches) > 10
    assert b"".join(batch.data for batch in batches).decode().splitlines() == lines
    for batch in batches:
        assert batch.data.endswith(b"\n")
        assert batch.data.startswith(f"line {batch.first_line} ".encode())
        assert batch.num_lines == batch.data.count(b"\n")
    assert batches[0].first_line == 1


def test_several_gzip_members_are_one_stream(tmp_path: Path) -> None:
    path = tmp_path / "members.gz"
    path.write_bytes(gzip.compress(b"first\n") + gzip.compress(b"second\nthird\n"))
    assert b"".join(decompressed_blocks(path, block_bytes=7)) == b"first\nsecond\nthird\n"


def test_prefetched_keeps_order_raises_errors_and_stops_with_the_caller() -> None:
    produced: list[int] = []

    def numbers(fail_at: int | None = None) -> Iterator[int]:
        for number in range(5):
            if number == fail_at:
                raise SASRecError(f"bad item {number}")
            produced.append(number)
            yield number

    assert list(prefetched(numbers())) == [0, 1, 2, 3, 4]
    with pytest.raises(SASRecError, match="bad item 3"):
        list(prefetched(numbers(fail_at=3)))
    produced.clear()
    stream = prefetched(numbers())
    assert next(stream) == 0
    stream.close()  # the caller stops: at most one item was produced ahead
    assert produced == [0, 1]
