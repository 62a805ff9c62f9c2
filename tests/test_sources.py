from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.imagegen import make_image
from vlmsearch.errors import InputError
from vlmsearch.sources import walk


def _names(root: Path, **kwargs: object) -> list[str]:
    return sorted(os.path.relpath(f.path, root) for f in walk([root], **kwargs))  # type: ignore[arg-type]


def test_walk_finds_images_recursively_and_filters(tmp_path: Path) -> None:
    make_image(tmp_path / "a.jpg", "red")
    make_image(tmp_path / "B.JPEG", "red", fmt="JPEG")
    make_image(tmp_path / "sub" / "deeper" / "c.png", "red")
    make_image(tmp_path / ".hidden" / "d.png", "red")
    make_image(tmp_path / "thumbs" / "e.png", "red")
    (tmp_path / "readme.txt").write_text("x")
    assert _names(tmp_path) == ["B.JPEG", "a.jpg", "sub/deeper/c.png", "thumbs/e.png"]
    assert _names(tmp_path, exclude=["thumbs"]) == ["B.JPEG", "a.jpg", "sub/deeper/c.png"]
    assert _names(tmp_path, exclude=["sub/*"]) == ["B.JPEG", "a.jpg", "thumbs/e.png"]
    assert _names(tmp_path, exclude=["*.png"]) == ["B.JPEG", "a.jpg"]
    assert ".hidden/d.png" in _names(tmp_path, include_hidden=True)


def test_missing_root_is_an_error_before_anything_is_yielded(tmp_path: Path) -> None:
    make_image(tmp_path / "a.jpg", "red")
    with pytest.raises(InputError, match="no such file"):
        list(walk([tmp_path, tmp_path / "typo"]))


def test_symlink_loops_and_links_outside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    make_image(root / "a.jpg", "red")
    make_image(outside / "o.jpg", "blue")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    problems: list[tuple[str, str]] = []
    found = _names(root, on_problem=lambda p, r: problems.append((p, r)))
    assert found == ["a.jpg", "out/o.jpg"]
    reasons = " ".join(r for _, r in problems)
    assert "already walked" in reasons and "broken" in reasons
    assert _names(root, follow_symlinks=False) == ["a.jpg"]


def test_unreadable_folder_is_reported_not_fatal(tmp_path: Path) -> None:
    make_image(tmp_path / "ok.jpg", "red")
    locked = tmp_path / "locked"
    make_image(locked / "x.jpg", "red")
    locked.chmod(0)
    try:
        problems: list[tuple[str, str]] = []
        found = _names(tmp_path, on_problem=lambda p, r: problems.append((p, r)))
        if os.access(locked, os.R_OK):  # running as root: permissions do not apply
            assert "locked/x.jpg" in found
        else:
            assert found == ["ok.jpg"]
            assert problems and problems[0][0].endswith("locked")
    finally:
        locked.chmod(0o755)


def test_file_root_is_yielded_whatever_its_extension(tmp_path: Path) -> None:
    odd = make_image(tmp_path / "photo.dat", "red", fmt="PNG")
    assert [f.path for f in walk([odd])] == [str(odd)]


def test_invalid_utf8_names_survive(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.jpg"
    make_image(Path(os.fsdecode(raw)), "red")
    (found,) = list(walk([tmp_path]))
    assert os.fsencode(found.path) == raw
