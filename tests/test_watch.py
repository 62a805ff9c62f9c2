"""`vlmsearch watch` and `serve --watch` as people run them: a real watcher process on a temp
folder, changed by this test, checked from other processes (`info --json`, `query --json`,
HTTP). Every wait is a polling deadline, never a fixed sleep, so a loaded machine makes the
test slower, not flaky. The figures it measures (events per round, time to appear) are
printed for docs/benchmarks.md (`pytest -s`)."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.imagegen import make_image, picture, scene
from tests.test_web_api import serving
from vlmsearch import Engine
from vlmsearch.watch import Watcher, WatchOptions

DEADLINE = 90.0
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black", "gray", "pink")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from vlmsearch.cli import main; main()", *args]


def wait_for(what: str, check: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something true; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class WatchProcess:
    """A `vlmsearch watch --json` subprocess and the rounds it printed so far."""

    def __init__(self, index: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            cli("watch", "--index-dir", str(index), "--model", "fake", "--json", *args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.rounds: list[dict[str, Any]] = []
        self.stderr = ""
        self._out = threading.Thread(target=self._read_rounds, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _read_rounds(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.rounds.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    def wait_initial(self) -> dict[str, Any]:
        first = wait_for("the initial run", lambda: self.rounds[:1] or self.proc.poll() is not
                         None)
        assert self.rounds, f"watch exited: {self.stderr}"
        assert first[0]["initial"]
        return self.rounds[0]

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._out.join(10)
        self._err.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@contextmanager
def watching(index: Path, *args: str) -> Iterator[WatchProcess]:
    watcher = WatchProcess(index, *args)
    try:
        yield watcher
    finally:
        watcher.kill()


def info(index: Path) -> dict[str, Any]:
    out = subprocess.run(cli("info", "--index-dir", str(index), "--json"), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def indexed_paths(index: Path) -> set[str]:
    """Every indexed path, from another process (the fake model ranks all images)."""
    out = subprocess.run(cli("query", "red", "--index-dir", str(index), "--json", "-k", "5000",
                             "--match", "semantic"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return {hit["path"] for hit in json.loads(out.stdout)}


def colour_pictures(folder: Path, n: int, prefix: str = "p") -> list[Path]:
    return [make_image(folder / f"{prefix}{i:04d}.png", COLOURS[i % len(COLOURS)], size=(24, 18))
            for i in range(n)]


def appear_time(index: Path, paths: set[str], since: float) -> float:
    wait_for(f"{len(paths)} files to appear", lambda: paths <= indexed_paths(index))
    return time.monotonic() - since


@pytest.mark.slow
def test_watch_applies_new_copied_renamed_and_deleted_files(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    colour_pictures(photos, 2, prefix="start")
    index = tmp_path / "index"
    figures: dict[str, Any] = {}
    with watching(index, str(photos), "--settle", "0.5") as watcher:
        assert watcher.wait_initial()["added"] == 2
        assert "file system events" in watcher.stderr or wait_for(
            "the watching line", lambda: "file system events" in watcher.stderr)

        # new files: time from the write to being found by another process's query
        start = time.monotonic()
        rounds_before = len(watcher.rounds)
        new = colour_pictures(photos / "new", 3, prefix="n")
        figures["appear_s_3_files"] = round(appear_time(index, {str(p) for p in new}, start), 2)
        figures["rounds_3_files"] = len(watcher.rounds) - rounds_before
        figures["round_latency_s_3_files"] = watcher.rounds[-1]["latency"]

        # a copy of a folder of many files is applied in a few rounds, not file by file
        source = tmp_path / "outside"
        many = colour_pictures(source, 400)
        rounds_before = len(watcher.rounds)
        start = time.monotonic()
        shutil.copytree(source, photos / "copied")
        copied = {str(photos / "copied" / p.name) for p in many}
        figures["appear_s_400_copy"] = round(appear_time(index, copied, start), 2)
        copy_rounds = watcher.rounds[rounds_before:]
        events = sum(r["events"] for r in copy_rounds)
        assert sum(r["added"] for r in copy_rounds) == 400
        assert len(copy_rounds) <= 4, copy_rounds
        assert events >= 400  # the events of all 400 files were folded into those rounds
        figures.update(copy_rounds=len(copy_rounds), copy_events=events,
                       copy_round_latency_s=max(r["latency"] for r in copy_rounds))

        # a renamed folder: the new paths reuse the stored vectors (nothing encoded again)
        rounds_before = len(watcher.rounds)
        start = time.monotonic()
        (photos / "copied").rename(photos / "renamed")
        renamed = {str(photos / "renamed" / p.name) for p in many}

        def moved() -> bool:
            paths = indexed_paths(index)
            return renamed <= paths and not copied & paths
        wait_for("the renamed folder", moved)
        figures["rename_s"] = round(time.monotonic() - start, 2)
        rename_rounds = watcher.rounds[rounds_before:]
        figures.update(rename_rounds=len(rename_rounds),
                       rename_events=sum(r["events"] for r in rename_rounds),
                       rename_round_latency_s=max(r["latency"] for r in rename_rounds))
        assert sum(r["encoded"] for r in rename_rounds) == 0, rename_rounds
        assert sum(r["reused"] for r in rename_rounds) == 400

        # deleted files, and a deleted folder, leave the index
        start = time.monotonic()
        new[0].unlink()
        shutil.rmtree(photos / "renamed")
        rounds_before = len(watcher.rounds)
        wait_for("the deletions", lambda: info(index)["images"] == 4)
        figures["delete_s"] = round(time.monotonic() - start, 2)
        figures["delete_round_latency_s"] = max(r["latency"] for r in watcher.rounds[-1:])
        assert str(new[0]) not in indexed_paths(index)

        # Ctrl-C: a clean stop with a line saying so
        assert watcher.interrupt() == 0
        assert "stopped watching" in watcher.stderr
        assert "Traceback" not in watcher.stderr
    print("\nwatch figures:", json.dumps(figures))


def write_slowly(path: Path, data: bytes, chunks: int, pause: float) -> None:
    step = -(-len(data) // chunks)
    with open(path, "wb") as fh:
        for start in range(0, len(data), step):
            fh.write(data[start:start + step])
            fh.flush()
            time.sleep(pause)


@pytest.mark.slow
def test_a_file_still_being_written_is_indexed_only_once_complete(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    index = tmp_path / "index"
    big = tmp_path / "big.jpg"
    scene("green", 7, (800, 600)).save(big, quality=95)
    data = big.read_bytes()
    with watching(index, str(photos), "--settle", "2") as watcher:
        watcher.wait_initial()
        target = photos / "slow.jpg"
        start = time.monotonic()
        write_slowly(target, data, chunks=20, pause=0.15)  # 3 s, each pause below --settle
        wait_for("the slowly written file", lambda: str(target) in indexed_paths(index))
        print(f"\nslow write: {len(data)} bytes indexed {time.monotonic() - start:.2f}s after "
              f"the first byte; rounds: {watcher.rounds[1:]}")
        assert info(index)["failed"] == 0  # never read half-written (it would have failed)
        assert all(r["skipped"] == 0 for r in watcher.rounds)
        assert sum(r["added"] + r["updated"] for r in watcher.rounds[1:]) == 1
        assert watcher.interrupt() == 0


@pytest.mark.slow
def test_polling_mode_sees_new_and_deleted_files(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    colour_pictures(photos, 1)
    index = tmp_path / "index"
    with watching(index, str(photos), "--poll", "0.5", "--settle", "0.3") as watcher:
        watcher.wait_initial()
        wait_for("the polling line", lambda: "scans every 0.5 s" in watcher.stderr)
        start = time.monotonic()
        new = make_image(photos / "later" / "blue.png", "blue")
        took = appear_time(index, {str(new)}, start)
        print(f"\npolling: a new file appeared after {took:.2f}s")
        new.unlink()
        wait_for("the deletion", lambda: info(index)["images"] == 1)
        assert watcher.interrupt() == 0


@pytest.mark.slow
def test_serve_watch_serves_new_files(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_image(photos / "red.png", "red")
    index = tmp_path / "index"
    with Engine.open(index, model="fake") as eng:
        eng.index([photos])
    with serving(index, "--watch", str(photos)) as url:
        start = time.monotonic()
        new = make_image(photos / "green.png", "green")

        def served() -> bool:
            with urllib.request.urlopen(url + "api/search?q=green&k=5", timeout=30) as r:
                return any(hit["path"] == str(new) for hit in json.load(r)["results"])
        wait_for("the new file in the served results", served)
        print(f"\nserve --watch: served {time.monotonic() - start:.2f}s after the write")


@contextmanager
def stopped_after(watcher: Watcher, seconds: float = DEADLINE) -> Iterator[None]:
    """Stop ``watcher`` at the deadline, so a missing round fails the test instead of
    hanging it."""
    timer = threading.Timer(seconds, watcher.stop)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def test_falls_back_to_polling_when_events_cannot_start(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    colour_pictures(photos, 1)

    def no_inotify() -> Any:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    with Engine.open(tmp_path / "index", model="fake") as eng:
        watcher = Watcher(eng, [photos], observer_factory=no_inotify,
                          options=WatchOptions(settle=0.2, debounce=0.1, fallback_poll=0.3))
        with stopped_after(watcher):
            rounds = watcher.rounds()
            first = next(rounds)
            assert first.initial and first.report is not None and first.report.added == 1
            assert watcher.mode == "polling" and "watch limit" in (watcher.fallback_reason or "")
            new = make_image(photos / "blue.png", "blue")
            done = next(rounds)  # the polling observer saw it
            assert done.report is not None and done.report.added == 1
            assert eng.search(text="blue", k=1)[0].path == str(new)
            watcher.stop()
            assert list(rounds) == []


def test_rounds_ignore_other_files_and_apply_a_burst_at_once(tmp_path: Path) -> None:
    """In-process: files that the index run would not take (text files, hidden names,
    excluded names) never start a round; a burst of changes is one round."""
    photos = tmp_path / "photos"
    photos.mkdir()
    with Engine.open(tmp_path / "index", model="fake") as eng:
        watcher = eng.watch([photos], exclude=["*.tmp"],
                            options=WatchOptions(settle=0.3, debounce=1.0))
        with stopped_after(watcher):
            rounds = watcher.rounds()
            assert next(rounds).initial
            (photos / "notes.txt").write_text("not a picture")
            picture("red").save(photos / ".hidden.png", format="PNG")
            picture("red").save(photos / "x.tmp", format="PNG")
            for i, colour in enumerate(COLOURS[:6]):
                make_image(photos / f"burst{i}.png", colour)
            done = next(rounds)
            assert done.report is not None and done.report.added == 6
            assert done.report.skipped == 0 and done.events >= 6
            watcher.stop()
            assert list(rounds) == []
        assert eng.info().images == 6


def test_rounds_follow_the_extension_options_of_index(tmp_path: Path) -> None:
    """--only-ext / --ext reach the watcher: files of other types never start a round, an
    added extension does, and the round's index run takes the same set."""
    photos = tmp_path / "photos"
    photos.mkdir()
    with Engine.open(tmp_path / "index", model="fake") as eng:
        watcher = eng.watch([photos], only_extensions=[".png"], add_extensions=[".pic"],
                            options=WatchOptions(settle=0.3, debounce=0.5))
        with stopped_after(watcher):
            rounds = watcher.rounds()
            assert next(rounds).initial
            picture("red").save(photos / "red.jpg", format="JPEG")  # not a type it takes
            picture("green").save(photos / "green.pic", format="PNG")
            make_image(photos / "blue.png", "blue")
            done = next(rounds)
            assert done.report is not None and done.report.added == 2
            watcher.stop()
            assert list(rounds) == []
        assert sorted(Path(h.path).name for h in eng.search(text="red", k=10)) == [
            "blue.png", "green.pic"]


@pytest.mark.slow
def test_after_a_kill_the_next_start_catches_up(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    colour_pictures(photos, 2)
    index = tmp_path / "index"
    with watching(index, str(photos), "--settle", "0.3") as watcher:
        watcher.wait_initial()
        watcher.proc.send_signal(signal.SIGKILL)
        watcher.proc.wait(30)
    later = colour_pictures(photos / "while-down", 5, prefix="d")
    (photos / "p0000.png").unlink()
    assert info(index)["images"] == 2  # nothing saw the changes yet, nothing is broken
    with watching(index, str(photos), "--settle", "0.3") as watcher:
        first = watcher.wait_initial()
        assert (first["added"], first["removed"]) == (5, 1)
        assert {str(p) for p in later} <= indexed_paths(index)
        assert watcher.interrupt() == 0
