"""The sequences step against an obviously-correct reference, on random small inputs.

The reference is plain Python, one rule per line, as the docs state them: keep each
(user, item) pair's earliest interaction (ties: the earlier row), drop users and items
with fewer than k interactions until none is left, then split each user's chronological
sequence.
"""

import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sasrec.data import schema
from sasrec.data.sequences import OFFICIAL_T1_MS, OFFICIAL_T2_MS, build_sequences
from sasrec.errors import SASRecError

T1, T2 = OFFICIAL_T1_MS, OFFICIAL_T2_MS
Row = tuple[str, str, int]  # user, item, timestamp
Example = tuple[str, tuple[str, ...], str]  # user, history, target (item ids)


def reference_sequences(rows: list[Row], kcore: int) -> dict[str, list[tuple[str, int]]]:
    """Each user's (item, time) sequence after dedup and k-core, oldest first."""
    earliest: dict[tuple[str, str], tuple[int, int]] = {}
    for order, (user, item, time) in enumerate(rows):
        if (user, item) not in earliest or (time, order) < earliest[user, item]:
            earliest[user, item] = (time, order)
    kept = dict(earliest)
    while kcore > 1:
        users = [user for user, _ in kept]
        items = [item for _, item in kept]
        smaller = {
            pair: value
            for pair, value in kept.items()
            if users.count(pair[0]) >= kcore and items.count(pair[1]) >= kcore
        }
        if smaller == kept:
            break
        kept = smaller
    sequences: dict[str, list[tuple[str, int, int]]] = {}
    for (user, item), (time, order) in kept.items():
        sequences.setdefault(user, []).append((item, time, order))
    return {
        user: [(item, time) for item, time, _ in sorted(seq, key=lambda x: (x[1], x[2]))]
        for user, seq in sequences.items()
    }


def reference_leave_one_out(sequences):
    train, valid, test = set(), set(), set()
    for user, seq in sequences.items():
        items = tuple(item for item, _ in seq)
        if len(items) >= 3:
            train.add((user, items[:-2]))
            valid.add((user, items[:-2], items[-2]))
            test.add((user, items[:-1], items[-1]))
        else:
            train.add((user, items))
    return train, valid, test


def reference_timestamp_split(sequences):
    train, valid, test = set(), set(), set()
    for user, seq in sequences.items():
        items = tuple(item for item, _ in seq)
        before = tuple(item for item, time in seq if time < T1)
        if before:
            train.add((user, before))
        for position, (item, time) in enumerate(seq):
            if time >= T1 and position > 0:  # a first interaction has no history
                (valid if time < T2 else test).add((user, items[:position], item))
    return train, valid, test


def read_split(out: Path):
    vocab = pl.read_parquet(out / schema.ITEM_VOCAB_FILE)
    ids = dict(zip(vocab[schema.ITEM_INDEX], vocab[schema.ITEM_ID], strict=True))
    assert vocab[schema.ITEM_ID].to_list() == sorted(vocab[schema.ITEM_ID])
    assert vocab[schema.ITEM_INDEX].to_list() == list(range(1, vocab.height + 1))
    train = {
        (user, tuple(ids[i] for i in seq))
        for user, seq in pl.read_parquet(out / schema.TRAIN_FILE).iter_rows()
    }
    held_out = [
        {
            (user, tuple(ids[i] for i in history), ids[target])
            for user, history, target in pl.read_parquet(out / name).iter_rows()
        }
        for name in (schema.VALID_FILE, schema.TEST_FILE)
    ]
    return train, *held_out


times = st.sampled_from([T1 - 2, T1 - 1, T1 - 1, T1, T1 + 1, T2 - 1, T2, T2 + 1, T2 + 1])
rows_strategy = st.lists(
    st.tuples(
        st.sampled_from([f"u{n}" for n in range(6)]),
        st.sampled_from([f"i{n}" for n in range(8)]),
        times,
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_strategy,
    kcore=st.sampled_from([0, 1, 2, 3]),
    split=st.sampled_from(["leave_one_out", "timestamp"]),
)
def test_sequences_step_equals_the_reference(rows: list[Row], kcore: int, split: str) -> None:
    sequences = reference_sequences(rows, kcore)
    reference = (
        reference_leave_one_out(sequences)
        if split == "leave_one_out"
        else reference_timestamp_split(sequences)
    )
    with tempfile.TemporaryDirectory() as work:
        interactions = Path(work) / "interactions.parquet"
        pl.DataFrame(
            [(user, item, time, 5.0, None) for user, item, time in rows],
            schema=schema.INTERACTIONS_SCHEMA,
            orient="row",
        ).write_parquet(interactions)
        out = Path(work) / "seq"
        if not sequences or not reference[1] or not reference[2]:
            with pytest.raises(SASRecError):  # nothing left, or nothing to evaluate
                build_sequences(interactions, out, kcore, split)
            assert not out.exists()
            return
        build_sequences(interactions, out, kcore, split)
        assert read_split(out) == reference
