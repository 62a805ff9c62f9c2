"""The page's filter row and text matches in a real browser (Debian's chromium, Playwright):
dates, folder, place and camera narrow the results, their state lives in the URL, every result
shows its date and place, and text read in a picture is shown with the query's words marked."""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.exifgen import exif_block
from tests.test_web_api import serving
from tests.test_web_browser import CHROMIUM, card_names, chromium_page, scene, sync_api
from tests.textgen import cjk_font, screen
from vlmsearch import Engine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not at "
                       f"{CHROMIUM} (apt-get install chromium; .ci/run installs it)"),
]

ALBUM = [  # folder, name, colour, date taken, camera (make, model), position
    ("lisbon", "tram", "yellow", "2023:07:14 18:03:22", ("FUJIFILM", "X-T4"),
     (38.7223, -9.1393)),
    ("lisbon", "river", "blue", "2023:07:15 09:10:00", ("FUJIFILM", "X-T4"),
     (38.7071, -9.1355)),
    ("paris", "tower", "gray", "2022:12:25 10:00:00", ("Canon", "Canon EOS R5"),
     (48.85837, 2.294481)),
    ("paris", "garden", "green", "2022:12:26 15:00:00", ("Canon", "Canon EOS R5"),
     (48.8462, 2.3371)),
    ("home", "cat", "orange", "2024:02:01 20:00:00", ("Apple", "iPhone 14"), None),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("album")
    for folder, name, colour, taken, (make, model), gps in ALBUM:
        (root / folder).mkdir(exist_ok=True)
        exif = exif_block(taken=taken, make=make, model=model, gps=gps)
        scene(colour, zlib.crc32(name.encode()), (320, 240)).save(root / folder / f"{name}.jpg",
                                                           exif=exif.tobytes(), quality=90)
    index = tmp_path_factory.mktemp("filter-index") / "index"
    with Engine.open(index, model="fake") as eng:
        assert eng.index([root]).added == len(ALBUM)
    with serving(index) as url:
        yield url, root


@pytest.fixture
def page(server: tuple[str, Path]) -> Iterator[Any]:
    url, _ = server
    with sync_api.sync_playwright() as p, chromium_page(p) as (page, problems):
        page.goto(url)
        yield page
    assert not problems, problems


def _names(page: Any) -> list[str]:
    return [n.removesuffix(".jpg") for n in card_names(page)]


def test_the_filter_row_narrows_results_and_lives_in_the_url(
    page: Any, server: tuple[str, Path]
) -> None:
    url, root = server
    page.fill("#q", "a picture")
    page.press("#q", "Enter")
    sync_api.expect(page.locator("#status")).to_contain_text(f"{len(ALBUM)} results")
    # every result shows its date and place
    tram = page.locator(".card", has=page.locator(".name", has_text="tram.jpg"))
    sync_api.expect(tram.locator(".about")).to_contain_text(re.compile(r"14 Jul 2023.*Lisbon"))

    page.fill("#f-place", "paris")
    page.locator("#f-place").dispatch_event("change")
    sync_api.expect(page.locator("#status")).to_contain_text("2 results")
    assert sorted(_names(page)) == ["garden", "tower"]  # the tower's GeoNames town is Vanves
    assert parse_qs(urlparse(page.url).query)["place"] == ["paris"]

    page.fill("#f-place", "")
    page.fill("#f-after", "2023-07-01")
    page.fill("#f-before", "2023-07-31")
    page.locator("#f-before").dispatch_event("change")
    sync_api.expect(page.locator("#status")).to_contain_text("2 results")
    assert sorted(_names(page)) == ["river", "tram"]
    query = parse_qs(urlparse(page.url).query)
    assert (query["after"], query["before"]) == (["2023-07-01"], ["2023-07-31"])

    page.fill("#f-after", "")
    page.fill("#f-before", "")
    page.fill("#f-camera", "iphone")
    page.locator("#f-camera").dispatch_event("change")
    sync_api.expect(page.locator("#status")).to_contain_text("1 result ")
    assert _names(page) == ["cat"]

    # the URL alone brings the same search back: a filter without words browses by date
    page.goto(f"{url}?in={root / 'lisbon'}")
    sync_api.expect(page.locator("#status")).to_contain_text("2 results")
    assert _names(page) == ["tram", "river"]  # oldest first
    assert page.input_value("#f-in") == str(root / "lisbon")
    sync_api.expect(page.locator("#f-clear")).to_be_visible()
    page.click("#f-clear")
    sync_api.expect(page.locator("#f-clear")).to_be_hidden()
    assert page.input_value("#f-in") == ""


@pytest.mark.skipif(cjk_font() is None, reason="no CJK font to render test text "
                    "(apt-get install fonts-wqy-microhei; .ci/run installs it)")
def test_text_in_pictures_is_shown_with_the_match_highlighted(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("shots")
    screen("boarding pass gate B12", random.Random(2)).save(root / "pass.png")
    screen("发票 登机口 317", random.Random(3)).save(root / "fapiao.png")
    scene("green", 5, (320, 240)).save(root / "meadow.jpg")
    index = tmp_path_factory.mktemp("ocr-web") / "index"
    with Engine.open(index, model="fake") as eng:
        assert eng.index([root], ocr=True).ocr_with_text == 2
    with serving(index) as url, sync_api.sync_playwright() as p, \
            chromium_page(p) as (page, _):
        for query, name, marked in (("gate B12", "pass.png", "B12"),
                                    ("发票", "fapiao.png", "发票")):
            page.goto(f"{url}?q={query}")
            first = page.locator(".card").first
            sync_api.expect(first.locator(".name")).to_have_text(name)
            marks = first.locator(".ocr mark").all_inner_texts()
            assert marked in [m.strip() for m in marks], marks
