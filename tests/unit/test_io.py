import pytest

from sasrec.errors import SASRecError
from sasrec.io import (
    COMPLETE_MARKER,
    STEP_FILE,
    atomic_dir,
    atomic_path,
    read_json,
    require_complete,
    require_output_dir,
    write_json,
)


def test_failed_write_leaves_the_previous_file_and_no_debris(tmp_path):
    target = tmp_path / "out.json"
    write_json({"v": 1}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_directory_content_is_replaced_whole_and_marked_complete(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target, "train") as tmp:
        (tmp / "old.txt").write_text("old")
        (tmp / "both.txt").write_text("first")
    with atomic_dir(target, "train") as tmp:
        (tmp / "new.txt").write_text("new")
        (tmp / "both.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == [
        STEP_FILE,
        COMPLETE_MARKER,
        "both.txt",
        "new.txt",
    ]
    assert (target / "both.txt").read_text() == "second"
    assert require_complete(target, "train") == target


def test_failed_directory_write_keeps_the_earlier_content(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target, "train") as tmp:
        (tmp / "a.txt").write_text("kept")
    with pytest.raises(RuntimeError), atomic_dir(target, "train") as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == [STEP_FILE, COMPLETE_MARKER, "a.txt"]
    assert (target / "a.txt").read_text() == "kept"
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "fresh", "train") as tmp:
        raise RuntimeError("killed")
    assert not (tmp_path / "fresh").exists()


def test_a_directory_without_the_marker_is_refused_by_name(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(SASRecError, match=r"half is incomplete \(no _SUCCESS\): the `sasrec x`"):
        require_complete(tmp_path / "half", "x")
    with pytest.raises(SASRecError, match="missing is not a directory"):
        require_complete(tmp_path / "missing", "x")


def test_another_steps_folder_is_refused_as_input_and_as_output(tmp_path):
    sequences = tmp_path / "sequences"
    with atomic_dir(sequences, "sequences") as tmp:
        (tmp / "train.parquet").write_text("data")
    with pytest.raises(
        SASRecError, match="is the output of `sasrec sequences`, not of `sasrec train`"
    ):
        require_complete(sequences, "train")
    with (
        pytest.raises(
            SASRecError,
            match=r"holds the output of `sasrec sequences`.*`sasrec evaluate` would replace",
        ),
        atomic_dir(sequences, "evaluate"),
    ):
        raise AssertionError("the check comes before the body")
    assert (sequences / "train.parquet").read_text() == "data"


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(SASRecError, match=r"home already holds files of its own \(1 entries\)"):
        require_output_dir(home, "evaluate")
    assert (home / "notes.txt").read_text() == "mine"
    assert (
        require_output_dir(tmp_path / "new" / "deeper", "evaluate") == tmp_path / "new" / "deeper"
    )


def test_a_file_where_a_folder_goes_is_refused_and_left_alone(tmp_path):
    (tmp_path / "taken").write_text("keep")
    for output in (tmp_path / "taken", tmp_path / "taken" / "below"):
        with pytest.raises(SASRecError, match=r"taken is a file, not a directory"):
            require_output_dir(output, "train")
    with pytest.raises(SASRecError, match="taken is a file"), atomic_path(tmp_path / "taken" / "x"):
        pass
    assert (tmp_path / "taken").read_text() == "keep"


def test_a_write_killed_half_way_may_be_replaced_by_the_rerun(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target, "train") as tmp:
        (tmp / "a.txt").write_text("first")
    (target / COMPLETE_MARKER).unlink()  # as a kill between the moves leaves it
    (target / ".staging-x").mkdir()
    with atomic_dir(target, "train") as tmp:
        (tmp / "a.txt").write_text("second")
    assert require_complete(target, "train") == target
    assert (target / "a.txt").read_text() == "second"
