from pathlib import Path

from components.images import IMAGE_INPUTS, default_tag, image_pull_secrets, source_digest


def make_tree(root: Path) -> Path:
    for entry in IMAGE_INPUTS:
        path = root / entry
        if "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(entry)
        else:
            (path / "sub").mkdir(parents=True)
            (path / "sub" / "module.py").write_text("x = 1\n")
    (root / "README.md").write_text("readme")
    return root


def test_any_change_to_what_goes_into_an_image_changes_the_digest(tmp_path):
    root = make_tree(tmp_path / "tree")
    before = source_digest(root)
    assert len(before) == 64
    (root / "README.md").write_text("other words")  # docs only: same images
    (root / "src" / "sub" / "__pycache__").mkdir()
    (root / "src" / "sub" / "__pycache__" / "module.pyc").write_bytes(b"\0")
    assert source_digest.__wrapped__(root) == before
    for changed in ("src/sub/module.py", "docker/requirements/sub/module.py", "pyproject.toml"):
        copy = make_tree(tmp_path / changed.replace("/", "_"))
        (copy / changed).write_text("y = 2\n")
        assert source_digest(copy) != before, changed


def test_outside_a_checkout_there_is_no_digest(tmp_path):
    assert source_digest(tmp_path) is None


def test_default_tag_is_the_version_and_the_checkout_digest():
    version, digest = default_tag().rsplit("-", 1)
    assert source_digest() is not None and source_digest().startswith(digest)
    assert version and len(digest) == 12


def test_image_pull_secrets_are_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("IMAGE_PULL_SECRETS", " regcred,, other ")
    assert image_pull_secrets() == ("regcred", "other")
    monkeypatch.delenv("IMAGE_PULL_SECRETS")
    assert image_pull_secrets() == ()
