import base64
import re

import polars as pl
import pytest

from sasrec.cli import main
from sasrec.data import schema
from sasrec.data.sequences import (
    OFFICIAL_T1_MS,
    OFFICIAL_T2_MS,
    build_item_vocab,
    build_sequences,
    earliest_interactions,
    kcore_filter,
    known_sequences,
    leave_one_out,
    timestamp_split,
)
from sasrec.errors import SASRecError
from sasrec.io import read_json


def interactions(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(u, i, t, 5.0, None) for u, i, t in rows],
        schema=schema.INTERACTIONS_SCHEMA,
        orient="row",
    )


def test_earliest_interaction_of_each_pair_is_kept_ties_by_file_order():
    frame = interactions([("u", "a", 30), ("u", "b", 20), ("u", "a", 10), ("u", "c", 20)])
    kept = earliest_interactions(frame.lazy()).collect().sort("_order")
    assert kept.select("item_id", "timestamp").rows() == [("b", 20), ("a", 10), ("c", 20)]


def test_kcore_cascades_until_stable():
    # Item z has one interaction: dropping it leaves user v with one item, which drops v,
    # which leaves item y with one interaction, which drops y.
    rows = [("u", "x", 1), ("u", "y", 2), ("w", "x", 1), ("w", "y", 2), ("v", "x", 1)]
    rows += [("v", "z", 2), ("t", "x", 1), ("t", "y", 2)]
    kept = kcore_filter(interactions(rows), 2)
    assert sorted(kept["user_id"].unique()) == ["t", "u", "w"]
    assert sorted(kept["item_id"].unique()) == ["x", "y"]
    cascade = [("u", "x", 1), ("u", "y", 2), ("v", "y", 1), ("v", "z", 2), ("w", "z", 1)]
    assert kcore_filter(interactions(cascade), 2).is_empty()


def test_kcore_zero_and_one_keep_everything():
    frame = interactions([("u", "x", 1)])
    assert kcore_filter(frame, 0).height == 1
    assert kcore_filter(frame, 1).height == 1


def test_item_vocab_is_sorted_ids_from_one():
    vocab = build_item_vocab(interactions([("u", "b", 1), ("u", "é", 2), ("v", "a", 1)]))
    assert vocab.rows() == [(1, "a"), (2, "b"), (3, "é")]
    assert vocab.schema == schema.ITEM_VOCAB_SCHEMA


def test_leave_one_out_split():
    sequences = pl.DataFrame(
        {"user_id": ["one", "two", "four"], "item_sequence": [[7], [7, 8], [1, 2, 3, 4]]}
    )
    train, valid, test = leave_one_out(sequences)
    assert train.rows() == [("one", [7]), ("two", [7, 8]), ("four", [1, 2])]
    assert valid.rows() == [("four", [1, 2], 3)]
    assert test.rows() == [("four", [1, 2, 3], 4)]


def test_build_sequences_writes_chronological_splits(tmp_path):
    rows = [("u1", "c", 300), ("u1", "a", 100), ("u1", "b", 200), ("u1", "d", 400)]
    rows += [("u2", "b", 50), ("u2", "a", 60), ("u2", "a", 70), ("u2", "d", 55)]
    rows += [("u3", "a", 1)]
    interactions(rows).write_parquet(tmp_path / "in.parquet")
    stats = build_sequences(tmp_path / "in.parquet", tmp_path / "seq", kcore=0)
    vocab = dict(pl.read_parquet(tmp_path / "seq" / "item_vocab.parquet").rows())
    a, b, c, d = (k for k, v in sorted(vocab.items(), key=lambda kv: kv[1]))
    test = pl.read_parquet(tmp_path / "seq" / "test.parquet")
    assert test.rows() == [("u1", [a, b, c], d), ("u2", [b, d], a)]
    valid = pl.read_parquet(tmp_path / "seq" / "valid.parquet")
    assert valid.rows() == [("u1", [a, b], c), ("u2", [b], d)]
    train = pl.read_parquet(tmp_path / "seq" / "train.parquet")
    assert train.rows() == [("u1", [a, b]), ("u2", [b]), ("u3", [a])]
    assert stats == read_json(tmp_path / "seq" / "stats.json")
    assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (3, 4, 8)
    assert stats["num_raw_interactions"] == 9


def test_empty_result_suggests_lower_kcore_and_writes_nothing(tmp_path):
    interactions([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)]).write_parquet(
        tmp_path / "in.parquet"
    )
    with pytest.raises(SASRecError, match="lower --kcore"):
        build_sequences(tmp_path / "in.parquet", tmp_path / "seq", kcore=5)
    assert not (tmp_path / "seq").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.parquet"]


def test_no_user_with_three_items_is_an_error(tmp_path):
    interactions([("u", "a", 1), ("u", "b", 2)]).write_parquet(tmp_path / "in.parquet")
    with pytest.raises(SASRecError, match="3 interactions needed"):
        build_sequences(tmp_path / "in.parquet", tmp_path / "seq", kcore=0)


T1, T2 = OFFICIAL_T1_MS, OFFICIAL_T2_MS


def test_timestamp_split_boundaries_and_carried_histories():
    # Worked by hand. ana: two before T1, one exactly at T1 (validation), one just before
    # T2 (validation), one exactly at T2 (test), one after (test). ben: starts at T1, so his
    # first item has no history and is dropped; his second (after T2) tests on [item 5].
    # cai: only trains.
    sequences = pl.DataFrame(
        {
            "user_id": ["ana", "ben", "cai"],
            "item_sequence": [[1, 2, 3, 4, 5, 6], [5, 7], [8, 9]],
            "_times": [
                [T1 - 2, T1 - 1, T1, T2 - 1, T2, T2 + 1],
                [T1, T2 + 5],
                [10, 20],
            ],
        }
    )
    train, valid, test = timestamp_split(sequences)
    assert train.rows() == [("ana", [1, 2]), ("cai", [8, 9])]
    assert valid.rows() == [("ana", [1, 2], 3), ("ana", [1, 2, 3], 4)]
    assert test.rows() == [("ana", [1, 2, 3, 4], 5), ("ana", [1, 2, 3, 4, 5], 6), ("ben", [5], 7)]


def test_histories_are_kept_whole_and_the_removed_max_len_flag_is_one_line(tmp_path, capsys):
    # Before: --max-len 2 cut histories to 2 items, and the items before the cut could be
    # ranked or recommended as new. Histories are now kept whole; the model cuts its input.
    rows = [("u", f"i{n}", n) for n in range(1, 8)] + [("v", f"i{n}", n) for n in range(7, 0, -1)]
    interactions(rows).write_parquet(tmp_path / "in.parquet")
    args = ["sequences", "--interactions", str(tmp_path / "in.parquet"), "--kcore", "0"]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--out", str(tmp_path / "cut"), "--max-len", "2"])
    assert exited.value.code == 2
    assert "--max-len was removed" in capsys.readouterr().err
    assert not (tmp_path / "cut").exists()
    build_sequences(tmp_path / "in.parquet", tmp_path / "seq", kcore=0)
    test = pl.read_parquet(tmp_path / "seq" / "test.parquet").sort("user_id")
    assert test["history"].list.len().to_list() == [6, 6]
    train = pl.read_parquet(tmp_path / "seq" / "train.parquet")
    assert train["item_sequence"].list.len().to_list() == [5, 5]


def test_equal_timestamps_keep_file_order_and_unicode_ids(tmp_path):
    rows = [("ü", "β", 5), ("ü", "α", 5), ("ü", "γ", 5), ("ü", "β", 9), ("ü", "δ", 6)]
    interactions(rows).write_parquet(tmp_path / "in.parquet")
    build_sequences(tmp_path / "in.parquet", tmp_path / "seq", kcore=0)
    index = {item: i for i, item in pl.read_parquet(tmp_path / "seq" / "item_vocab.parquet").rows()}
    test = pl.read_parquet(tmp_path / "seq" / "test.parquet")
    # β, α, γ all at 5 keep file order; the later repeat of β is dropped; δ at 6 is last.
    assert test.rows() == [("ü", [index["β"], index["α"], index["γ"]], index["δ"])]


def test_build_sequences_with_the_timestamp_split_and_its_stats(tmp_path):
    rows = [("a", "x", T1 - 10), ("a", "y", T1 + 10), ("a", "z", T2 + 10)]
    rows += [("b", "y", T1 - 20), ("b", "x", T1 - 10), ("b", "z", T1 + 5), ("c", "z", 1)]
    interactions(rows).write_parquet(tmp_path / "in.parquet")
    stats = build_sequences(tmp_path / "in.parquet", tmp_path / "seq", kcore=0, split="timestamp")
    assert stats["split"] == "timestamp"
    assert (stats["num_train_users"], stats["num_train_interactions"]) == (3, 4)
    assert (stats["num_valid_examples"], stats["num_test_examples"]) == (2, 1)
    assert stats["num_eval_users"] == 1
    assert stats["sequence_length_max"] == 3
    assert stats["sequence_length_p50"] == 3
    assert stats["item_count_max"] == 3  # z: a, b and c


def test_unknown_split_is_an_error(tmp_path):
    interactions([("u", "a", 1)]).write_parquet(tmp_path / "in.parquet")
    with pytest.raises(SASRecError, match="unknown split 'random'; splits: leave_one_out"):
        build_sequences(tmp_path / "in.parquet", tmp_path / "seq", split="random")


def test_report_plots_lengths_and_popularity(tmp_path):
    rows = [(f"u{u}", f"i{(u * 7 + k) % 13}", k) for u in range(40) for k in range(1 + u % 9)]
    interactions(rows).write_parquet(tmp_path / "in.parquet")
    stats = build_sequences(tmp_path / "in.parquet", tmp_path / "seq", kcore=0)
    report = (tmp_path / "seq" / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', report)
    assert len(images) == 2
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert f"<td>sequence_length_max</td><td>{stats['sequence_length_max']}</td>" in report


def test_known_sequences_are_whole_in_time_order_for_every_user():
    held_out = schema.HELD_OUT_SCHEMA
    train = pl.DataFrame(
        {"user_id": ["lo", "ts", "pub", "only"], "item_sequence": [[1, 2, 3], [1], [5, 6], [9, 8]]},
        schema=schema.TRAIN_SCHEMA,
    )
    valid = pl.DataFrame(
        {
            "user_id": ["lo", "ts", "new", "pub"],
            "history": [[1, 2, 3], [1], [1], [5]],
            "target": [4, 2, 3, 7],
        },
        schema=held_out,
    )
    test = pl.DataFrame(
        {"user_id": ["lo"], "history": [[1, 2, 3, 4]], "target": [5]}, schema=held_out
    )
    assert known_sequences(train, valid, test).rows() == [
        ("lo", [1, 2, 3, 4, 5]),  # leave-one-out: the test example holds it all
        ("new", [1, 3]),  # no training item: both items were held out
        ("only", [9, 8]),  # no held-out example: the training sequence
        ("pub", [5, 7, 6]),  # published labels interleave: the training item 6 came last
        ("ts", [1, 2]),  # timestamp split: the validation item after the training one
    ]
