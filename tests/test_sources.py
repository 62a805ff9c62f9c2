from __future__ import annotations

import os
from pathlib import Path

from tests.imagegen import make_image
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


def test_missing_root_is_reported_unavailable_and_the_others_are_walked(tmp_path: Path) -> None:
    make_image(tmp_path / "a.jpg", "red")
    unavailable: list[tuple[str, str]] = []
    found = list(walk([tmp_path / "typo", tmp_path],
                      on_unavailable=lambda p, r: unavailable.append((p, r))))
    assert [Path(f.path).name for f in found] == ["a.jpg"]
    assert unavailable == [(str(tmp_path / "typo"), "no such file or folder")]


def test_symlink_loops_and_links_outside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    make_image(root / "a.jpg", "red")
    make_image(outside / "o.jpg", "blue")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    problems: list[tuple[str, str]] = []
    unavailable: list[tuple[str, str]] = []
    found = _names(root, on_problem=lambda p, r: problems.append((p, r)),
                   on_unavailable=lambda p, r: unavailable.append((p, r)))
    assert found == ["a.jpg", "out/o.jpg"]
    assert "already walked" in " ".join(r for _, r in problems)
    # a dangling link may point at an unplugged drive: unavailable, not gone
    assert [(Path(p).name, "broken" in r) for p, r in unavailable] == [("dangling.jpg", True)]
    assert _names(root, follow_symlinks=False) == ["a.jpg"]


def test_unreadable_folder_is_reported_not_fatal(tmp_path: Path) -> None:
    make_image(tmp_path / "ok.jpg", "red")
    locked = tmp_path / "locked"
    make_image(locked / "x.jpg", "red")
    locked.chmod(0)
    try:
        unavailable: list[tuple[str, str]] = []
        found = _names(tmp_path, on_unavailable=lambda p, r: unavailable.append((p, r)))
        if os.access(locked, os.R_OK):  # running as root: permissions do not apply
            assert "locked/x.jpg" in found
        else:
            assert found == ["ok.jpg"]
            assert unavailable and unavailable[0][0].endswith("locked")
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
