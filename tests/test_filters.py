"""Search by when, where and which: each filter alone and combined, the true top-k among
matching images (even when they rank last unfiltered), browsing by date, places by the names
people use, bad values, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.exifgen import photo
from tests.imagegen import make_image
from vlmsearch import Engine, Filter, Settings, UsageError
from vlmsearch.cli import app

runner = CliRunner()
EIFFEL = (48.85837, 2.294481)
LISBON = (38.7223, -9.1393)
SAO_PAULO = (-23.5505, -46.6333)
TOKYO = (35.6586, 139.7454)


@pytest.fixture
def album(tmp_path: Path) -> Path:
    root = tmp_path / "album"
    photo(root / "2023" / "lisbon.jpg", "red", taken="2023:07:14 18:03:22", offset="+01:00",
          make="FUJIFILM", model="X-T4", gps=LISBON)
    photo(root / "2022" / "paris.jpg", "blue", taken="2022:12:25 10:00:00",
          make="Canon", model="Canon EOS R5", lens="RF24-70mm", gps=EIFFEL)
    photo(root / "2023" / "saopaulo.jpg", "yellow", taken="2023:08:02 09:30:00",
          make="Apple", model="iPhone 14", gps=SAO_PAULO)
    photo(root / "2023" / "tokyo.heic", "orange", taken="2023:07:20 21:15:00",
          make="Apple", model="iPhone 14", gps=TOKYO)
    make_image(root / "scans" / "old-scan.png", "green")  # says nothing about itself
    return root


def _names(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [Path(h.path).name for h in hits]


def test_each_filter_alone_and_combined(tmp_path: Path, album: Path) -> None:
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([album])

        def found(**where: object) -> set[str]:
            return set(_names(eng.search(text="a picture", k=10, where=Filter(**where))))

        assert found(after="2023-07", before="2023-07") == {"lisbon.jpg", "tokyo.heic"}
        assert found(after="2023-07-15") == {"saopaulo.jpg", "tokyo.heic"}
        assert found(before="2022") == {"paris.jpg"}
        assert found(folders=[album / "scans"]) == {"old-scan.png"}
        assert found(camera="iphone") == {"saopaulo.jpg", "tokyo.heic"}
        assert found(camera="fuji") == {"lisbon.jpg"}
        assert found(place="Paris") == {"paris.jpg"}  # the Eiffel Tower's GeoNames town: Vanves
        assert found(place="sao paulo") == {"saopaulo.jpg"}  # accents ignored
        assert found(place="ILE-DE-FRANCE") == {"paris.jpg"}
        assert found(place="Japan") == {"tokyo.heic"}
        assert found(place="Paris, France") == {"paris.jpg"}
        assert found(place="Paris, Japan") == set()
        assert found(near=(48.86, 2.35, 10)) == {"paris.jpg"}
        assert found(near="48.86,2.35,1") == set()
        assert found(types=["heic"]) == {"tokyo.heic"}
        assert found(types=["jpeg"]) == {"lisbon.jpg", "paris.jpg", "saopaulo.jpg"}
        assert found(camera="apple", after="2023-08") == {"saopaulo.jpg"}
        assert found(folders=[album / "2023"], place="Portugal") == {"lisbon.jpg"}
        hit = eng.search(text="red", k=1, where=Filter(place="Lisbon"))[0]
        assert (hit.taken, hit.camera) == ("2023-07-14T18:03:22+01:00", "FUJIFILM X-T4")
        assert hit.place and "Lisbon" in hit.place and hit.lat == pytest.approx(LISBON[0], 1e-3)
        info = eng.info()
        assert (info.with_date, info.with_position, info.with_camera) == (4, 4, 4)


def test_browsing_by_date_without_a_query(tmp_path: Path, album: Path) -> None:
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([album])
        oldest = eng.search(where=Filter(after="2000"), k=10)
        assert _names(oldest) == ["paris.jpg", "lisbon.jpg", "tokyo.heic", "saopaulo.jpg"]
        assert all(h.score is None for h in oldest)
        newest = eng.search(where=Filter(folders=[album]), sort="-date", k=10)
        assert _names(newest) == ["saopaulo.jpg", "tokyo.heic", "lisbon.jpg", "paris.jpg",
                                  "old-scan.png"]  # undated last
        by_date = eng.search(text="a picture", where=Filter(camera="apple"), sort="date")
        assert _names(by_date) == ["tokyo.heic", "saopaulo.jpg"]
        with pytest.raises(UsageError, match="needs a TEXT"):
            eng.search(where=Filter(camera="apple"), sort="score")


@pytest.mark.parametrize("exact_limit", [100_000, 100], ids=["exact", "ivf"])
def test_a_selective_filter_finds_matches_far_down_the_ranking(tmp_path: Path,
                                                               exact_limit: int) -> None:
    root = tmp_path / "photos"
    for i in range(260):  # red pictures: they win any unfiltered "red" query
        make_image(root / "red" / f"{i:03d}.png", (200 + i % 50, 20 + i % 30, 30),
                   size=(16 + i % 7, 16))
    photo(root / "old" / "blue.jpg", "blue", taken="2019:05:01 12:00:00")
    photo(root / "old" / "gray.jpg", "gray", taken="2019:06:01 12:00:00")
    settings = Settings(exact_search_limit=exact_limit)
    with Engine.open(tmp_path / "index", model="fake", settings=settings) as eng:
        eng.index([root])
        assert eng.info().index_type.startswith("IVF" if exact_limit == 100 else "Flat")
        unfiltered = _names(eng.search(text="red", k=262))
        assert unfiltered.index("blue.jpg") > 200
        hits = eng.search(text="red", k=5, where=Filter(before="2019-12"))
        assert sorted(_names(hits)) == ["blue.jpg", "gray.jpg"]
        assert hits[0].score is not None and hits[0].score >= hits[1].score  # type: ignore[operator]
        assert eng.search(text="red", k=5, where=Filter(before="2000")) == []
        few = eng.search(text="red", k=3, where=Filter(folders=[root / "red"]), min_score=0.99)
        assert all(h.score is not None and h.score >= 0.99 for h in few)


def test_bad_filter_values_are_one_clear_line(tmp_path: Path, album: Path) -> None:
    runner.invoke(app, ["index", str(album), "--model", "fake", "--index-dir",
                        str(tmp_path / "i")])
    for args, message in [
        (["--after", "2023-13-45"], "--after 2023-13-45: not a date"),
        (["--before", "yesterday"], "--before yesterday: not a date"),
        (["--near", "91,0"], "latitude 91 is not between -90 and 90"),
        (["--near", "10,200"], "longitude 200"),
        (["--near", "paris"], "use LAT,LON or LAT,LON,KM"),
        (["--after", "2024", "--before", "2023"], "later than --before"),
        (["--sort", "random"], "unknown --sort"),
        (["--min-score", "3"], "between -1 and 1"),
    ]:
        done = runner.invoke(app, ["query", "red", "--index-dir", str(tmp_path / "i"), *args])
        assert done.exit_code == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)


def test_the_command_line_filters_prints_and_reports(tmp_path: Path, album: Path) -> None:
    index = tmp_path / "i"
    done = runner.invoke(app, ["index", str(album), "--model", "fake", "--index-dir",
                               str(index)])
    assert done.exit_code == 0, done.stderr
    out = runner.invoke(app, ["query", "--place", "paris", "--index-dir", str(index),
                              "--json"])
    assert out.exit_code == 0, out.stderr
    (hit,) = json.loads(out.stdout)
    assert Path(hit["path"]).name == "paris.jpg" and hit["score"] is None
    assert hit["taken"] == "2022-12-25T10:00:00" and hit["camera"] == "Canon EOS R5"
    assert "Paris" in hit["place"] and hit["lat"] == pytest.approx(EIFFEL[0], abs=1e-3)
    table = runner.invoke(app, ["query", "a picture", "--after", "2023", "--index-dir",
                                str(index), "--sort", "-date"])
    assert table.exit_code == 0 and "2023-08-02 09:30" in table.stdout
    info = json.loads(runner.invoke(app, ["info", "--index-dir", str(index), "--json"]).stdout)
    assert (info["with_date"], info["with_position"], info["with_camera"]) == (4, 4, 4)


def test_hostile_exif_never_stops_a_run_and_never_reaches_the_terminal(tmp_path: Path) -> None:
    root = tmp_path / "hostile"
    photo(root / "year0.jpg", taken="0000:00:00 00:00:00", gps=(0.0, 0.0))
    photo(root / "year9999.jpg", taken="9999:12:31 23:59:59", make="X" * 5000)
    (root / "truncated.jpg").write_bytes(photo(root / "t.jpg", taken="2020:01:01 00:00:00",
                                               make="Canon").read_bytes()[:300])
    done = subprocess.run([sys.executable, "-m", "vlmsearch.cli", "index", str(root), "--model",
                           "fake", "--index-dir", str(tmp_path / "i"), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] == 3 and report["skipped"] == 1  # the truncated one is recorded
    assert "Warning" not in done.stderr and "EXIF" not in done.stderr, done.stderr
    with Engine.open(tmp_path / "i", create=False) as eng:
        hits = eng.search(text="red", k=10)
        assert all(h.taken is None or h.taken.startswith("2020") for h in hits)


def test_date_windows_match_the_same_images_whichever_way_they_are_found() -> None:
    """A narrow date window is read off the date order, a wide one tested row by row: both
    must give exactly the images a direct test of every row gives, undated and deleted
    images included, with the other filters on top."""
    import numpy as np

    from vlmsearch.search.columns import PhotoColumns
    from vlmsearch.search.filters import CheckedFilter

    rng = np.random.default_rng(0)
    n = 4000
    taken = rng.uniform(1.4e9, 1.7e9, n)
    taken[rng.random(n) < 0.2] = np.nan  # a fifth have no date
    live = rng.random(n) > 0.05
    rows = [(i + 1, f"/p/{'ab'[i % 2]}/{i}.jpg".encode(), "ok" if live[i] else "failed",
             None if np.isnan(taken[i]) else float(taken[i]), None, None,
             "Canon" if i % 3 else "Apple", "X", None, None, None, None, None, None)
            for i in range(n)]
    columns = PhotoColumns()
    columns._put(rows)
    ids = np.arange(1, n + 1)
    for width in (1e6, 3e7, 1.2e8, 2.8e8):  # under and over half of the images
        for _ in range(5):
            after = float(rng.uniform(1.4e9, 1.7e9 - width))
            for extra in ({}, {"camera": "apple"}, {"folders": ("/p/a",)}):
                where = CheckedFilter(after_ts=after, before_ts=after + width, **extra)
                want = live & (taken >= after) & (taken <= after + width)
                if extra.get("camera"):
                    want &= ids % 3 == 1
                if extra.get("folders"):
                    want &= ids % 2 == 1
                assert sorted(columns.matches(where).tolist()) == ids[want].tolist()
    only_after = CheckedFilter(after_ts=1.69e9)
    assert sorted(columns.matches(only_after).tolist()) == ids[live & (taken >= 1.69e9)].tolist()
