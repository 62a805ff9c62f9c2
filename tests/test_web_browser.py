"""The search page in a real browser: Debian's chromium driven by Playwright, against a real
``vlmsearch serve`` process on 127.0.0.1, over generated colourful pictures and the fake
colour encoder (the words "red", "green", ... find pictures of that colour).

``test_screenshot`` photographs this test gallery (into a temp folder, or
``$VLMSEARCH_SCREENSHOT``). The README's screenshot shows real photos instead: it is made by
``python docs/make_screenshot.py`` (Flickr8k photos, the shipped model, the same browser).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.imagegen import scene
from tests.test_web_api import serving
from vlmsearch import Engine

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not at "
                       f"{CHROMIUM} (apt-get install chromium; .ci/run installs it)"),
]
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed (pip install -e '.[dev]')")

SCENES = {
    "red": ["poppies", "lantern", "barn", "kite"],
    "orange": ["sunset", "pumpkins", "dunes"],
    "yellow": ["sunflowers", "taxi", "lemons"],
    "green": ["meadow", "forest", "fern"],
    "blue": ["lake", "harbour", "glacier"],
    "purple": ["lavender", "dusk", "iris"],
    "pink": ["blossom", "flamingo"],
    "gray": ["city", "rain"],
    "white": ["snowfield"],
    "black": ["night"],
}
CAPTIONS = ["a red barn in the evening", "an orange sunset over the dunes",
            "a field of yellow sunflowers", "a green meadow", "a blue lake under the sky",
            "purple lavender"]


def make_gallery(root: Path) -> None:
    for colour, names in SCENES.items():
        for i, name in enumerate(names):
            portrait = (i + len(colour)) % 3 == 0
            size = (360, 480) if portrait else (480, 360)
            ext = ".png" if i % 2 else ".jpg"
            sub = root / ("2024" if i % 2 else "holidays")
            sub.mkdir(parents=True, exist_ok=True)
            img = scene(colour, zlib.crc32(name.encode()), size)
            if i == 0 and colour == "orange":  # stored sideways with an EXIF rotation tag
                exif = Image.Exif()
                exif[0x0112] = 6
                img.transpose(Image.Transpose.ROTATE_90).save(sub / f"{colour}-{name}{ext}",
                                                              exif=exif, quality=92)
                continue
            img.save(sub / f"{colour}-{name}{ext}", **({"quality": 92} if ext == ".jpg" else {}))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("gallery")
    make_gallery(root)
    index = tmp_path_factory.mktemp("web-index") / "index"
    with Engine.open(index, model="fake") as eng:
        report = eng.index([root])
        assert report.added == sum(len(v) for v in SCENES.values())
        eng.add_texts(CAPTIONS, source="captions.txt")
    env_home = os.environ.get("VLMSEARCH_HOME")
    with serving(index) as url:
        yield url
    assert env_home == os.environ.get("VLMSEARCH_HOME")


@contextmanager
def chromium_page(playwright: Any) -> Iterator[tuple[Any, list[str]]]:
    """A page of a fresh Chromium (1280×860, 15 s timeouts) and the list its script errors
    are added to; the browser is closed after the block."""
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        page = chromium.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(15_000)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
        yield page, problems
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("request", lambda req: None if req.url.startswith((server, "blob:", "data:"))
            else problems.append(f"request outside the server: {req.url}"))
    page.goto(server)
    yield page
    context.close()
    assert not problems, problems


def card_names(page: Any) -> list[str]:
    return [n.strip() for n in page.locator(".card .name").all_inner_texts()]


def search_for(page: Any, text: str) -> None:
    page.fill("#q", text)
    page.press("#q", "Enter")


def wait_for_first(page: Any, pattern: str) -> None:
    sync_api.expect(page.locator(".card .name").first).to_have_text(re.compile(pattern))


def thumbnails_loaded(page: Any) -> None:
    page.wait_for_function("() => [...document.querySelectorAll('.card img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")


def test_text_query_then_more_like_this(page: Any, server: str) -> None:
    total = sum(len(names) for names in SCENES.values())
    sync_api.expect(page.locator("#stats")).to_contain_text(f"{total} images")
    search_for(page, "green")
    wait_for_first(page, r"^green-")
    assert [n.split("-")[0] for n in card_names(page)[:3]] == ["green"] * 3
    status = page.locator("#status")
    sync_api.expect(status).to_contain_text(re.compile(r"24 results in \d+\.\d+ s"))
    thumbnails_loaded(page)

    # "More like this" on a purple picture: purple ones come first, the picture itself is gone
    purple = page.locator(".card", has=page.locator(".name", has_text="purple-dusk"))
    purple_id = purple.get_attribute("data-id")
    purple.locator(".like").click()
    wait_for_first(page, r"^purple-")
    names = card_names(page)
    assert "purple-dusk.png" not in names
    assert [n.split("-")[0] for n in names[:2]] == ["purple", "purple"]
    sync_api.expect(page.locator("#chip")).to_be_visible()
    sync_api.expect(page.locator("#chip-label")).to_have_text("like purple-dusk.png")
    assert f"like={purple_id}" in page.url
    assert page.input_value("#q") == ""

    # Back returns to the text query
    page.go_back()
    wait_for_first(page, r"^green-")
    sync_api.expect(page.locator("#chip")).to_be_hidden()


def test_clicking_a_result_opens_the_full_image(page: Any) -> None:
    search_for(page, "orange")
    wait_for_first(page, r"^orange-")
    thumbnails_loaded(page)
    # the sideways-stored photo has an upright (portrait) thumbnail
    portrait = page.locator(".card", has=page.locator(".name", has_text="orange-sunset"))
    size = portrait.locator("img").evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert size[1] > size[0], size
    ident = portrait.get_attribute("data-id")
    portrait.locator(".thumb").click()
    viewer = page.locator("#viewer")
    sync_api.expect(viewer).to_be_visible()
    sync_api.expect(page.locator("#viewer-img")).to_have_attribute("src", f"/api/image/{ident}")
    page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth > 0")
    sync_api.expect(page.locator("#viewer-caption")).to_contain_text("orange-sunset.jpg")
    page.keyboard.press("ArrowRight")
    sync_api.expect(page.locator("#viewer-img")).not_to_have_attribute("src",
                                                                       f"/api/image/{ident}")
    page.keyboard.press("Escape")
    sync_api.expect(viewer).to_be_hidden()


def test_upload_through_the_file_picker_and_combine_with_words(
    page: Any, tmp_path: Path
) -> None:
    query = tmp_path / "my blue photo.png"
    scene("blue", 99, (300, 200)).save(query)
    page.set_input_files("#file", str(query))
    wait_for_first(page, r"^blue-")
    assert [n.split("-")[0] for n in card_names(page)[:3]] == ["blue"] * 3
    sync_api.expect(page.locator("#chip-label")).to_have_text("my blue photo.png")

    # add words to the uploaded picture: blue + yellow pictures lead
    search_for(page, "yellow")
    page.wait_for_function(
        "() => { const n = [...document.querySelectorAll('.card .name')].slice(0, 6)"
        ".map(e => e.textContent.split('-')[0]); "
        "return n.includes('yellow') && n.includes('blue'); }")
    leaders = {n.split("-")[0] for n in card_names(page)[:6]}
    assert leaders == {"blue", "yellow"}

    # removing the picture leaves a plain text query
    page.click("#chip-clear")
    sync_api.expect(page.locator("#chip")).to_be_hidden()
    page.press("#q", "Enter")
    wait_for_first(page, r"^yellow-")


def test_image_to_captions(page: Any, tmp_path: Path) -> None:
    sync_api.expect(page.locator("#stats")).to_contain_text(f"{len(CAPTIONS)} captions")
    page.select_option("#target", "texts")
    query = tmp_path / "lake.jpg"
    scene("blue", 7, (320, 240)).save(query)
    page.set_input_files("#file", str(query))
    first = page.locator("#texts li .text").first
    sync_api.expect(first).to_have_text("a blue lake under the sky")
    sync_api.expect(page.locator("#status")).to_contain_text(f"{len(CAPTIONS)} captions in")
    assert page.locator(".card").count() == 0


def test_errors_are_shown_on_the_page(page: Any) -> None:
    page.set_input_files("#file", files=[{"name": "fake.png", "mimeType": "image/png",
                                          "buffer": b"this is not a picture"}])
    error = page.locator("#error")
    sync_api.expect(error).to_be_visible()
    sync_api.expect(error).to_contain_text("not an image")
    page.click("#chip-clear")
    page.fill("#q", "")
    page.click("#go")
    sync_api.expect(error).to_contain_text("Type some words")
    search_for(page, "red")
    wait_for_first(page, r"^red-")
    sync_api.expect(error).to_be_hidden()


def test_screenshot(page: Any, tmp_path: Path) -> None:
    target = Path(os.environ.get("VLMSEARCH_SCREENSHOT") or tmp_path / "screenshot.png")
    search_for(page, "orange sunset")
    wait_for_first(page, r"^orange-")
    thumbnails_loaded(page)
    page.mouse.move(0, 0)
    page.screenshot(path=str(target), full_page=False)
    with Image.open(target) as shot:
        assert shot.size == (1280, 860)
