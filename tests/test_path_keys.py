"""Paths compared as the file system does: on macOS (case and Unicode normalisation ignored)
and Windows (case ignored) one photo reached under two spellings is one index row, and its
removal is seen under either. Simulated here with the mode forced (VLMSEARCH_PATH_KEYS) and a
second spelling made with a symbolic link."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from tests.imagegen import make_image
from vlmsearch import Engine
from vlmsearch.store.pathkeys import PathKeys, platform_mode


def test_keys_per_mode() -> None:
    nfc, nfd = "/P/Caf\u00e9.jpg", unicodedata.normalize("NFD", "/P/Caf\u00e9.jpg")
    assert nfc != nfd
    exact, windows, mac = PathKeys("exact"), PathKeys("case-insensitive"), PathKeys("macos")
    assert exact.key("/P/a.jpg") != exact.key("/p/A.JPG")
    assert windows.key("/P/a.jpg") == windows.key("/p/A.JPG")
    assert windows.key(nfc) != windows.key(nfd)
    assert mac.key(nfc) == mac.key(nfd) and mac.key("/P/a.jpg") == mac.key("/p/A.jpg")
    assert mac.key("/P/x").startswith(mac.key("/P/"))  # folder keys prefix their contents
    bad = os.fsdecode(b"/p/caf\xe9.jpg")  # not UTF-8: survives as surrogates
    assert mac.key(bad) != mac.key("/p/cafe.jpg")


@pytest.mark.parametrize("mode, second", [
    ("case-insensitive", "pictures"),                                   # Windows
    ("macos", "PICTURES"),                                              # macOS: case
    ("macos", unicodedata.normalize("NFD", "Pictur\u00e9s")),           # macOS: NFD names
])
def test_two_spellings_of_one_folder_are_one_set_of_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, second: str
) -> None:
    monkeypatch.setenv("VLMSEARCH_PATH_KEYS", mode)
    first = "Pictur\u00e9s" if "\u0301" in second else "Pictures"
    real = tmp_path / first
    for colour in ("red", "green", "blue"):
        make_image(real / f"{colour}.png", colour)
    alias = tmp_path / second
    alias.symlink_to(real, target_is_directory=True)  # what the file system does for us there
    with Engine.open(tmp_path / "index", model="fake") as eng:
        assert eng.index([real]).added == 3
        again = eng.index([alias])  # the same files, typed another way
        assert (again.added, again.unchanged, again.removed) == (0, 3, 0)
        assert eng.info().images == 3
        (real / "green.png").unlink()
        gone = eng.index([alias])
        assert (gone.removed, eng.info().images) == (1, 2)
        assert eng.remove([real / "red.png"]) == 1  # removal under the first spelling


def test_exact_mode_keeps_byte_for_byte_names_apart(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMSEARCH_PATH_KEYS", "exact")
    assert platform_mode() == "exact"
    make_image(tmp_path / "p" / "a.png", "red")
    make_image(tmp_path / "p" / "A.png", "blue")
    with Engine.open(tmp_path / "index", model="fake") as eng:
        assert eng.index([tmp_path / "p"]).added == 2
    monkeypatch.setenv("VLMSEARCH_PATH_KEYS", "macos")
    with Engine.open(tmp_path / "index", create=False) as eng:  # the index keeps its mode
        assert eng.index([tmp_path / "p"]).unchanged == 2


def test_a_bad_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMSEARCH_PATH_KEYS", "nonsense")
    with pytest.raises(ValueError, match="VLMSEARCH_PATH_KEYS"):
        platform_mode()
