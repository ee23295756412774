import pytest

from sasrec.errors import SASRecError
from sasrec.io import (
    COMPLETE_MARKER,
    atomic_dir,
    atomic_path,
    read_json,
    require_complete,
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
    with atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("old")
        (tmp / "both.txt").write_text("first")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        (tmp / "both.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == [COMPLETE_MARKER, "both.txt", "new.txt"]
    assert (target / "both.txt").read_text() == "second"
    assert require_complete(target, "x") == target


def test_failed_directory_write_keeps_the_earlier_content(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("kept")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == [COMPLETE_MARKER, "a.txt"]
    assert (target / "a.txt").read_text() == "kept"
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "fresh") as tmp:
        raise RuntimeError("killed")
    assert not (tmp_path / "fresh").exists()


def test_a_directory_without_the_marker_is_refused_by_name(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(SASRecError, match=r"half is incomplete \(no _SUCCESS\): the step x"):
        require_complete(tmp_path / "half", "step x")
    with pytest.raises(SASRecError, match="missing is not a directory"):
        require_complete(tmp_path / "missing", "step x")
