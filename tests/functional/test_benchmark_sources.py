"""The official benchmark files of Amazon Reviews 2023 from a mirror on 127.0.0.1 (kept as
published), RecBole .inter files, and formats told by content rather than by name."""

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from conftest import shared_file
from sasrec.data.sources import detect_format, resolve_source_files
from sasrec.data.steps import download_step, sequences_step
from sasrec.errors import SASRecError

HEADER = "user_id,parent_asin,rating,timestamp"


def write_csv_gz(path: Path, rows: list[str], header: str = HEADER) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\n".join([header, *rows]) + "\n").encode()))


def held_out(sequences_dir: Path, name: str) -> list[tuple]:
    """Rows of valid/test.parquet in original item ids."""
    vocab = dict(pl.read_parquet(sequences_dir / "item_vocab.parquet").rows())
    frame = pl.read_parquet(sequences_dir / f"{name}.parquet")
    return [
        (user, [vocab[i] for i in history], vocab[target]) for user, history, target in frame.rows()
    ]


def test_official_last_out_split_is_kept_as_published(http_server, tmp_path):
    base_url, root, seen = http_server
    folder = root / "benchmark" / "5core" / "last_out"
    # ann's published test item is not her latest review: a re-split would pick "c".
    # bob only trains: leave-one-out would hold out two of his three items.
    write_csv_gz(
        folder / "Video_Games.train.csv.gz",
        ["ann,a,5.0,10", "ann,b,4.0,20", "bob,a,3.0,5", "bob,b,3.0,6", "bob,c,3.0,7"],
    )
    write_csv_gz(folder / "Video_Games.valid.csv.gz", ["ann,c,5.0,40"])
    write_csv_gz(folder / "Video_Games.test.csv.gz", ["ann,d,5.0,30"])  # fmt: skip
    counts = download_step(
        "amazon2023:Video_Games:5core/last_out", tmp_path / "raw", base_url, tmp_path / "cache"
    )
    assert counts["num_interactions"] == 7
    assert sorted(seen) == [f"/benchmark/5core/last_out/Video_Games.{p}.csv.gz"
                            for p in ("test", "train", "valid")]  # fmt: skip
    interactions = pl.read_parquet(tmp_path / "raw" / "interactions.parquet")
    assert interactions["split"].to_list() == ["train"] * 5 + ["valid", "test"]
    stats = sequences_step(tmp_path / "raw" / "interactions.parquet", tmp_path / "seq", kcore=5)
    assert stats["split"] == "published"
    seq = tmp_path / "seq"
    vocab = dict(pl.read_parquet(seq / "item_vocab.parquet").rows())
    train = {
        u: [vocab[i] for i in items] for u, items in pl.read_parquet(seq / "train.parquet").rows()
    }
    assert train == {"ann": ["a", "b"], "bob": ["a", "b", "c"]}
    # Histories are everything earlier in time: the test item (t=30) came before validation's.
    assert held_out(seq, "valid") == [("ann", ["a", "b", "d"], "c")]
    assert held_out(seq, "test") == [("ann", ["a", "b"], "d")]


def test_official_timestamp_split_with_history_column(http_server, tmp_path):
    base_url, root, _ = http_server
    folder = root / "benchmark" / "0core" / "timestamp_w_his"
    header = HEADER + ",history"
    write_csv_gz(folder / "Books.train.csv.gz", ["u,x,5.0,1,", "u,y,5.0,2,x"], header)
    write_csv_gz(folder / "Books.valid.csv.gz", ["u,z,5.0,3,x y", "v,x,1.0,4,"], header)
    write_csv_gz(folder / "Books.test.csv.gz", ["u,w,5.0,5,x y z", "u,q,5.0,6,x y z w"], header)
    download_step("amazon2023:Books:0core/timestamp_w_his", tmp_path / "raw", base_url,
                  tmp_path / "cache")  # fmt: skip
    stats = sequences_step(tmp_path / "raw" / "interactions.parquet", tmp_path / "seq")
    assert (stats["num_valid_examples"], stats["num_test_examples"]) == (1, 2)  # v: no history
    assert held_out(tmp_path / "seq", "test") == [
        ("u", ["x", "y", "z"], "w"),
        ("u", ["x", "y", "z", "w"], "q"),
    ]


def test_rating_only_file_is_unsplit(http_server, tmp_path):
    base_url, root, seen = http_server
    write_csv_gz(root / "benchmark" / "5core" / "rating_only" / "Software.csv.gz",
                 [f"u{u},i{(u + k) % 4},5.0,{k}" for u in range(3) for k in range(4)])  # fmt: skip
    download_step("amazon2023:Software:5core", tmp_path / "raw", base_url, tmp_path / "cache")
    assert seen == ["/benchmark/5core/rating_only/Software.csv.gz"]
    frame = pl.read_parquet(tmp_path / "raw" / "interactions.parquet")
    assert frame.height == 12 and frame["split"].null_count() == 12


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("amazon2023:Video_Games:7core", "unknown benchmark '7core'"),
        ("amazon2023:Video_Games:5core/random", "split in rating_only, last_out"),
        ("amazon2023:Video_Gamez:5core", "unknown Amazon Reviews 2023 category 'Video_Gamez'"),
    ],
)
def test_bad_benchmark_names_fail_before_any_download(source, message):
    with pytest.raises(SASRecError, match=message):
        resolve_source_files(source, "http://127.0.0.1:9")


def test_benchmark_csv_without_a_required_column_names_it(tmp_path):
    source = tmp_path / "bad.csv"
    source.write_text("user_id,rating,timestamp\nu,5.0,1\n")
    with pytest.raises(SASRecError, match=r"bad.csv: no column parent_asin; it has user_id"):
        download_step(str(source), tmp_path / "raw")
    assert not list((tmp_path / "raw").iterdir())  # nothing written, no temporary left


def test_recbole_inter_file_of_movielens(tmp_path):
    inter = shared_file("ml-100k/ml-100k.inter")
    counts = download_step(str(inter), tmp_path / "raw")
    assert counts["num_interactions"] == 100_000
    frame = pl.read_parquet(tmp_path / "raw" / "interactions.parquet")
    assert frame.row(0)[:4] == ("196", "242", 881250949, 3.0)  # the file's first data line
    stats = sequences_step(tmp_path / "raw" / "interactions.parquet", tmp_path / "seq", kcore=5)
    assert (stats["num_users"], stats["num_raw_interactions"]) == (943, 100_000)


def test_formats_are_told_by_content_whatever_the_name(tmp_path):
    reviews = tmp_path / "reviews.data"
    reviews.write_bytes(gzip.compress(json.dumps({"user_id": "u"}).encode() + b"\n"))
    text = tmp_path / "pairs.dat"
    text.write_text("1 5\n1 6\n")
    csv = tmp_path / "export.jsonl"  # a misleading name: the content wins
    csv.write_text(HEADER + "\nu,i,5.0,1\n")
    inter = tmp_path / "x"
    inter.write_text("user_id:token\titem_id:token\n1\t2\n")
    assert [detect_format(str(p), p) for p in (reviews, text, csv, inter)] == [
        "reviews_jsonl", "sasrec_text", "benchmark_csv", "recbole_inter"
    ]  # fmt: skip
    unknown = tmp_path / "notes.md"
    unknown.write_text("# notes\n")
    with pytest.raises(SASRecError, match="cannot tell the format of"):
        detect_format(str(unknown), unknown)


def test_history_column_of_a_heavy_user_is_read_in_batches(tmp_path):
    # One user of 3,000 reviews: the histories alone take about 30 MB, more than one batch
    # of the reader (24 MiB), as the heavy users of the official 0-core files do.
    rows, earlier = [], []
    for step in range(3_000):
        item = f"i{step:05d}"
        rows.append(f"heavy,{item},5.0,{1_000 + step},{' '.join(earlier)}")
        earlier.append(item)
    rows += [f"light{u},i{u:05d},{u % 5 + 1}.0,{u}," for u in range(100)]
    source = tmp_path / "Video_Games.train.csv.gz"
    write_csv_gz(source, rows, HEADER + ",history")
    assert len(gzip.decompress(source.read_bytes())) > 24 << 20
    counts = download_step(str(source), tmp_path / "raw")
    frame = pl.read_parquet(tmp_path / "raw" / "interactions.parquet")
    assert counts["num_interactions"] == frame.height == 3_100
    expected = [
        (user, item, int(timestamp), float(rating))
        for user, item, rating, timestamp, _ in (row.split(",") for row in rows)
    ]
    assert frame.select("user_id", "item_id", "timestamp", "rating").rows() == expected
