"""Places that cannot be reached for one run (an unplugged drive, a folder without read
permission, a missing root) never cost their index entries; only files whose folder was listed
and no longer holds them are removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.imagegen import make_image
from vlmsearch import Engine
from vlmsearch.cli import EXIT_PARTIAL, app

runner = CliRunner()


def _photos(folder: Path, n: int, offset: int = 0) -> None:
    for i in range(n):
        make_image(folder / f"p{offset + i:03d}.png", ((offset + i) * 4 % 256, 90, 160),
                   size=(20, 20))


def test_a_linked_folder_on_an_unplugged_drive_keeps_its_entries(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    drive = tmp_path / "media" / "usb"
    _photos(root, 40)
    _photos(drive / "trip", 20, offset=40)
    (root / "trip").symlink_to(drive / "trip", target_is_directory=True)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        first = eng.index([root])
        assert (first.added, first.encoded) == (60, 60)
        drive.rename(tmp_path / "media" / "usb-unmounted")  # the drive is gone for one run
        (root / "p000.png").unlink()                        # a real deletion meanwhile
        away = eng.index([root])
        assert (away.removed, away.unavailable, away.unchanged) == (1, 20, 39)
        assert [Path(p).name for p, _ in away.unavailable_places] == ["trip"]
        assert not away.complete
        info = eng.info()
        assert (info.images, info.unavailable) == (59, 20)
        assert len(eng.unavailable()) == 20
        (tmp_path / "media" / "usb-unmounted").rename(drive)  # plugged in again
        back = eng.index([root])
        assert (back.encoded, back.added, back.removed, back.unchanged) == (0, 0, 0, 59)
        assert back.complete and eng.info().unavailable == 0


def test_an_unreadable_folder_keeps_its_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    _photos(root, 5)
    _photos(root / "locked", 4, offset=5)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        assert eng.index([root]).added == 9
        real_scandir = os.scandir
        locked = str(root / "locked")

        def scandir(path: str) -> os._ScandirIterator[str]:  # a permission or I/O error
            if os.fspath(path) == locked:
                raise PermissionError(13, "Permission denied", locked)
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
        report = eng.index([root])
        assert (report.removed, report.unavailable, report.unchanged) == (0, 4, 5)
        assert report.unavailable_places == [(locked, "Permission denied")]
        monkeypatch.undo()
        shutil.rmtree(root / "locked")  # now really gone: its folder was listed without them
        gone = eng.index([root])
        assert (gone.removed, gone.unavailable) == (4, 0)


def test_a_missing_root_is_reported_and_the_others_are_indexed(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "stick"
    _photos(a, 3)
    _photos(b, 2, offset=3)
    index = tmp_path / "index"
    ok = runner.invoke(app, ["index", str(a), str(b), "--model", "fake", "--index-dir",
                             str(index), "--json"])
    assert ok.exit_code == 0, ok.stderr
    b.rename(tmp_path / "stick-unplugged")
    _photos(a, 1, offset=10)  # new work on the reachable root still gets done
    partial = runner.invoke(app, ["index", str(a), str(b), "--index-dir", str(index), "--json"])
    assert partial.exit_code == EXIT_PARTIAL != 0
    report = json.loads(partial.stdout)
    assert (report["added"], report["removed"], report["unavailable"]) == (1, 0, 2)
    assert report["missing_roots"] == [str(b)]
    human = runner.invoke(app, ["index", str(a), str(b), "--index-dir", str(index)])
    assert human.exit_code == EXIT_PARTIAL
    assert f"could not reach {b}: no such file or folder" in human.stderr
    assert "2 indexed files there were kept" in human.stderr
    assert "Traceback" not in human.stderr + human.stdout
    with Engine.open(index, create=False) as eng:
        assert eng.info().images == 6


def test_unreadable_subfolder_as_an_ordinary_user(tmp_path: Path) -> None:
    """The real thing, where permissions apply: the same run as an unprivileged user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as an unprivileged user")
    import tempfile

    world = Path(tempfile.mkdtemp(prefix="vlmsearch-perm-", dir="/tmp"))
    try:
        world.chmod(0o755)
        photos = world / "photos"
        _photos(photos, 3)
        _photos(photos / "private", 2, offset=3)
        index = world / "index"
        index.mkdir()
        for p in [photos, *photos.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        os.chown(index, 65534, 65534)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
               "-m", "vlmsearch.cli", "index", str(photos), "--index-dir", str(index / "i"),
               "--json"]
        env = {**os.environ, "HOME": str(world)}
        first = subprocess.run([*cmd, "--model", "fake"], capture_output=True, text=True,
                               env=env)
        assert first.returncode == 0, first.stderr
        (photos / "private").chmod(0o700)  # root's now: the user cannot list it
        second = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert second.returncode == EXIT_PARTIAL, second.stderr
        report = json.loads(second.stdout)
        assert (report["removed"], report["unavailable"], report["unchanged"]) == (0, 2, 3)
    finally:
        shutil.rmtree(world, ignore_errors=True)
