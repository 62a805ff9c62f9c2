"""The web API (``vlmsearch serve``) through FastAPI's TestClient, with the fake colour encoder:
search by text, upload, indexed id and combinations; stats; serving files by id only;
upload limits and bad uploads; the thumbnail cache; and the ``serve`` command itself."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from tests.imagegen import make_image, picture
from vlmsearch import Engine, Settings
from vlmsearch.cli import app as cli_app
from vlmsearch.errors import (
    ImageError,
    IndexLockedError,
    IndexNotFoundError,
    ModelMismatchError,
    NotInIndexError,
    UsageError,
    VlmsearchError,
)
from vlmsearch.web import create_app
from vlmsearch.web.app import status_for
from vlmsearch.web.guards import LOOPBACK_HOSTS, host_of
from vlmsearch.web.thumbnails import ThumbnailCache

HIT_KEYS = ["rank", "score", "path", "id", "width", "height", "taken", "camera", "place", "lat",
            "lon", "matched", "ocr", "ocr_spans"]
TEXT_HIT_KEYS = ["rank", "score", "text", "id", "source"]


def png_bytes(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    picture(colour, size).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def photos(colour_tree: Path) -> Path:
    """The shared colour tree plus a second red picture, so "more like red.jpg" has an
    obvious answer."""
    make_image(colour_tree / "more" / "red2.png", "red", size=(90, 60))
    return colour_tree


@pytest.fixture
def engine(tmp_path: Path, photos: Path) -> Iterator[Engine]:
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([photos])
        yield eng


@pytest.fixture
def client(engine: Engine) -> TestClient:
    return TestClient(create_app(engine))


def ids_by_name(engine: Engine) -> dict[str, int]:
    return {Path(s.path).name: s.id for s in engine._handle.store.file_states().values()}


def names(response_json: dict) -> list[str]:
    return [Path(r["path"]).name for r in response_json["results"]]


# --- searching -------------------------------------------------------------------------------
def test_text_search_returns_exactly_the_cli_result_objects(
    client: TestClient, engine: Engine
) -> None:
    r = client.get("/api/search", params={"q": "red", "k": 3})
    assert r.status_code == 200
    data = r.json()
    assert set(data) == {"results", "count", "seconds", "target", "warnings"}
    assert data["warnings"] == []
    assert data["count"] == 3 and data["target"] == "images"
    assert isinstance(data["seconds"], float) and data["seconds"] >= 0
    assert names(data)[0] in {"red.jpg", "red2.png"}
    assert set(names(data)[:2]) == {"red.jpg", "red2.png"}
    assert [list(hit) for hit in data["results"]] == [HIT_KEYS] * 3
    assert data["results"] == [h.to_dict() for h in engine.search(text="red", k=3)]
    rotated = client.get("/api/search", params={"q": "orange", "k": 1}).json()["results"][0]
    assert Path(rotated["path"]).name == "rotated.jpg"
    assert (rotated["width"], rotated["height"]) == (40, 80)  # after EXIF rotation


def test_negative_terms_and_k(client: TestClient) -> None:
    plain = client.get("/api/search", params={"q": "green blue", "k": 2}).json()
    assert set(names(plain)) == {"green.png", "blue sky.jpg"}
    pushed = client.get("/api/search",
                        params=[("q", "green blue"), ("not", "green"), ("k", "8")]).json()
    assert names(pushed)[0] == "blue sky.jpg"

    def score(data: dict, name: str) -> float:
        return next(r["score"] for r in data["results"] if Path(r["path"]).name == name)

    assert score(pushed, "green.png") < score(plain, "green.png") - 0.2
    assert client.get("/api/search", params={"q": "red", "k": 500}).json()["count"] == 7


def test_upload_search_and_combined_text_plus_image(client: TestClient) -> None:
    r = client.post("/api/search", files={"image": ("query.png", png_bytes("green"), "image/png")},
                    data={"k": "2"})
    assert r.status_code == 200, r.text
    assert names(r.json())[0] == "green.png"
    assert [list(hit) for hit in r.json()["results"]] == [HIT_KEYS] * 2

    both = client.post("/api/search", files={"image": ("q.png", png_bytes("purple"), "image/png")},
                       data={"q": "yellow", "k": "2"}).json()
    assert set(names(both)) == {"purple.bmp", "ünïcode 黄色.webp"}

    pushed = client.post("/api/search", files={"image": ("q.png", png_bytes("red"), "image/png")},
                         data={"q": "blue", "not": ["red"], "k": "1"}).json()
    assert names(pushed) == ["blue sky.jpg"]


def test_more_like_this_by_indexed_id(client: TestClient, engine: Engine) -> None:
    ids = ids_by_name(engine)
    r = client.get("/api/search", params={"like": ids["red.jpg"], "k": 3})
    assert r.status_code == 200, r.text
    found = names(r.json())
    assert found[0] == "red2.png"
    assert "red.jpg" not in found  # the query image is left out of its own results
    # like + words: "more like this, but yellow"
    mixed = client.get("/api/search", params={"like": ids["green.png"], "q": "yellow",
                                              "k": 1}).json()
    assert names(mixed) == ["ünïcode 黄色.webp"]
    # the same through the multipart endpoint
    form = client.post("/api/search", data={"like": str(ids["red.jpg"]), "k": "1"}).json()
    assert names(form) == ["red2.png"]


def test_image_to_text_over_added_texts(client: TestClient, engine: Engine) -> None:
    engine.add_texts(["a red square", "a green field", "the blue sky"], source="captions.txt")
    r = client.post("/api/search", files={"image": ("q.png", png_bytes("green"), "image/png")},
                    data={"target": "texts", "k": "2"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["target"] == "texts"
    assert [list(hit) for hit in data["results"]] == [TEXT_HIT_KEYS] * 2
    assert data["results"][0]["text"] == "a green field"
    assert data["results"][0]["source"] == "captions.txt"
    like = client.get("/api/search", params={"like": ids_by_name(engine)["blue sky.jpg"],
                                             "target": "texts", "k": 1}).json()
    assert like["results"][0]["text"] == "the blue sky"
    assert client.get("/api/info").json()["texts"] == 3
    for ident in ids_by_name(engine).values():  # no text is lost to an image's id
        if client.get(f"/api/image/{ident}").status_code == 200:
            r = client.get("/api/search", params={"like": ident, "target": "texts", "k": 10})
            assert r.json()["count"] == 3, ident


def test_info_has_the_fields_of_cli_info_json(client: TestClient, engine: Engine) -> None:
    result = CliRunner().invoke(cli_app, ["info", "--index-dir", str(engine.path), "--json"])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)
    api = client.get("/api/info").json()
    assert list(api) == list(cli)
    assert (api["images"], api["failed"], api["model"], api["path"]) == (
        7, 2, "fake", str(engine.path))


def test_file_names_that_are_not_utf8_survive(tmp_path: Path) -> None:
    if sys.platform in ("darwin", "win32"):
        pytest.skip("this file system only takes valid Unicode names")
    folder = tmp_path / "odd"
    folder.mkdir()
    odd = folder / os.fsdecode(b"caf\xe9 red.png")
    make_image(odd, "red")
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([folder])
        c = TestClient(create_app(eng))
        r = c.get("/api/search", params={"q": "red"})
        assert r.status_code == 200
        hit = json.loads(r.content.decode("ascii"))["results"][0]
        assert hit["path"] == os.fspath(odd)
        assert c.get(f"/api/thumb/{hit['id']}").status_code == 200
        assert c.get(f"/api/image/{hit['id']}").content == odd.read_bytes()


# --- bad requests ----------------------------------------------------------------------------
@pytest.mark.parametrize(("payload", "message"), [
    (b"this is a text file, not a picture\n", "not an image"),
    (b"", "empty file"),
    (png_bytes("red")[:60], "cannot be used"),
])
def test_bad_uploads_get_a_4xx_with_a_message(
    client: TestClient, payload: bytes, message: str
) -> None:
    r = client.post("/api/search", files={"image": ("q.jpg", payload, "image/jpeg")})
    assert r.status_code == 422
    assert message in r.json()["detail"]


def test_uploads_over_the_limit_get_413(engine: Engine) -> None:
    c = TestClient(create_app(engine, max_upload_bytes=10_000))
    big = os.urandom(10_001)
    r = c.post("/api/search", files={"image": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    # declared far too large: refused before the body is read
    r = c.post("/api/search", content=b"x" * 2_000_000,
               headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "too large" in r.json()["detail"]

    # chunked (no Content-Length): refused once the stream passes the limit
    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"y" * 10_000

    r = c.post("/api/search", content=chunks(),
               headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    # a small upload still works
    ok = c.post("/api/search", files={"image": ("q.png", png_bytes("blue"), "image/png")})
    assert ok.status_code == 200


def test_decompression_bombs_are_refused(tmp_path: Path, engine: Engine) -> None:
    with Engine.open(engine.path, settings=Settings(max_pixels=1000)) as strict:
        r = TestClient(create_app(strict)).post(
            "/api/search", files={"image": ("q.png", png_bytes("red"), "image/png")})
    assert r.status_code == 422 and "too large" in r.json()["detail"]


@pytest.mark.parametrize(("params", "status", "message"), [
    ({}, 400, "give words"),
    ({"q": "   "}, 400, "give words"),
    ({"q": "red", "k": "0"}, 422, "k:"),
    ({"q": "red", "k": "501"}, 422, "k:"),
    ({"q": "red", "k": "ten"}, 422, "k:"),
    ({"q": "red", "target": "sounds"}, 422, "target:"),
    ({"like": "abc"}, 422, "like:"),
    ({"like": "424242"}, 404, "no image with id 424242"),
    ({"q": "x" * 1001}, 422, "q:"),
])
def test_bad_queries_get_a_4xx_with_a_message(
    client: TestClient, params: dict[str, str], status: int, message: str
) -> None:
    r = client.get("/api/search", params=params)
    assert r.status_code == status
    assert message in r.json()["detail"]


def test_upload_and_like_together_is_a_usage_error(client: TestClient, engine: Engine) -> None:
    r = client.post("/api/search", files={"image": ("q.png", png_bytes("red"), "image/png")},
                    data={"like": str(ids_by_name(engine)["green.png"])})
    assert r.status_code == 400 and "not both" in r.json()["detail"]


def test_library_errors_map_to_http_statuses() -> None:
    assert status_for(UsageError("x")) == 400
    assert status_for(ImageError("x")) == 422
    assert status_for(IndexNotFoundError("x")) == 404
    assert status_for(NotInIndexError("x")) == 404
    assert status_for(IndexLockedError("x")) == 409
    assert status_for(ModelMismatchError("x")) == 503
    assert status_for(VlmsearchError("x")) == 500


def test_a_missing_index_fails_when_the_app_is_made(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="vlmsearch index"):
        create_app(tmp_path / "nothing-here")


# --- serving files: by id only ---------------------------------------------------------------
def test_images_and_thumbnails_are_served_by_id(client: TestClient, engine: Engine) -> None:
    ids = ids_by_name(engine)
    r = client.get(f"/api/image/{ids['red.jpg']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == _path_of(engine, ids["red.jpg"]).read_bytes()
    assert r.headers["x-content-type-options"] == "nosniff"
    png = client.get(f"/api/image/{ids['green.png']}")
    assert png.headers["content-type"] == "image/png"
    thumb = client.get(f"/api/thumb/{ids['blue sky.jpg']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"


def test_formats_browsers_cannot_show_are_sent_as_jpeg(tmp_path: Path) -> None:
    tiff = make_image(tmp_path / "scans" / "scan.tif", "blue", size=(60, 90))
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([tiff.parent])
        r = TestClient(create_app(eng)).get(f"/api/image/{ids_by_name(eng)['scan.tif']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (60, 90)


def _path_of(engine: Engine, ident: int) -> Path:
    with engine._handle.store.read() as conn:
        return Path(engine._handle.store.records([ident], conn)[ident].path)


@pytest.mark.parametrize("url", [
    "/api/image/0",
    "/api/image/-1",
    "/api/image/999999",
    "/api/image/99999999999999999999999",
    "/api/image/abc",
    "/api/image/1.5",
    "/api/image/..",
    "/api/image/%2e%2e",
    "/api/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/image/../../etc/passwd",
    "/api/image/..%2f..%2fetc%2fpasswd",
    "/api/image/%2Fetc%2Fpasswd",
    "/api/image/1%2f..%2f..%2fetc%2fpasswd",
    "/api/thumb/..%2F..%2Fetc%2Fpasswd",
    "/api/thumb/999999",
    "/api/thumb/x",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
])
def test_no_path_reaches_a_file_outside_the_index(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code)
    assert b"root:" not in r.content
    if url.startswith("/api/"):
        assert isinstance(r.json()["detail"], str)


def test_files_that_failed_to_index_are_not_served(client: TestClient, engine: Engine) -> None:
    failed = {Path(r.path).name: r.id for r in engine.failed()}
    assert set(failed) == {"broken.jpg", "notes.jpg"}
    for ident in failed.values():
        assert client.get(f"/api/image/{ident}").status_code == 404
        assert client.get(f"/api/thumb/{ident}").status_code == 404


def test_a_symlink_is_served_only_because_it_is_in_the_index(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    secret = make_image(outside / "linked-green.png", "green")
    other = make_image(outside / "never-indexed-blue.png", "blue")
    tree = tmp_path / "tree"
    make_image(tree / "red.jpg", "red")
    (tree / "link.png").symlink_to(secret)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([tree])
        c = TestClient(create_app(eng))
        ids = ids_by_name(eng)
        assert set(ids) == {"red.jpg", "link.png"}  # indexed under the link's own path
        r = c.get(f"/api/image/{ids['link.png']}")
        assert r.status_code == 200 and r.content == secret.read_bytes()
        # nothing else in that folder can be had, whatever the id
        served = [c.get(f"/api/image/{i}").content for i in range(1, 20)]
        assert other.read_bytes() not in served
        # the link now points elsewhere: still only what is at the indexed path is served
        (tree / "link.png").unlink()
        r = c.get(f"/api/image/{ids['link.png']}")
        assert r.status_code == 404 and "gone" in r.json()["detail"]


# --- thumbnails --------------------------------------------------------------------------------
def test_thumbnails_are_made_once_upright_and_cached_in_the_index(
    client: TestClient, engine: Engine
) -> None:
    ident = ids_by_name(engine)["rotated.jpg"]  # 80×40 pixels stored, EXIF orientation 6
    first = client.get(f"/api/thumb/{ident}")
    assert first.status_code == 200
    w, h = Image.open(io.BytesIO(first.content)).size
    assert h > w, "the thumbnail must be upright (portrait)"
    cached = list((engine.path / "thumbs").glob(f"{ident}-*.jpg"))
    assert len(cached) == 1
    stamp = cached[0].stat()
    second = client.get(f"/api/thumb/{ident}")
    assert second.content == first.content
    again = cached[0].stat()
    assert (again.st_ino, again.st_mtime_ns, again.st_ctime_ns) == (
        stamp.st_ino, stamp.st_mtime_ns, stamp.st_ctime_ns), "made once, then served from disk"
    # the browser can revalidate cheaply
    etag = second.headers["etag"]
    assert client.get(f"/api/thumb/{ident}", headers={"if-none-match": etag}).status_code == 304


def _mean_colour(jpeg: bytes) -> tuple[int, ...]:
    img = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((1, 1), Image.Resampling.BOX)
    return img.getpixel((0, 0))  # type: ignore[return-value]


def test_thumbnails_follow_content_changes(client: TestClient, engine: Engine,
                                           photos: Path) -> None:
    ident = ids_by_name(engine)["red.jpg"]
    red = _mean_colour(client.get(f"/api/thumb/{ident}").content)
    assert red[0] > 150 and red[2] < 100
    old = list((engine.path / "thumbs").glob(f"{ident}-*.jpg"))
    # the file is edited (new content, new mtime) but not re-indexed yet: remade anyway
    make_image(photos / "red.jpg", "blue")
    st = (photos / "red.jpg").stat()
    os.utime(photos / "red.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    blue = _mean_colour(client.get(f"/api/thumb/{ident}").content)
    assert blue[2] > 150 and blue[0] < 100
    # re-indexing records the new digest: the thumbnail gets a new name, the old one goes
    engine.index([photos])
    assert ids_by_name(engine)["red.jpg"] == ident
    again = client.get(f"/api/thumb/{ident}")
    assert _mean_colour(again.content)[2] > 150
    now = list((engine.path / "thumbs").glob(f"{ident}-*.jpg"))
    assert len(now) == 1 and now != old


def test_thumbnail_cache_is_safe_under_concurrent_requests(tmp_path: Path) -> None:
    source = make_image(tmp_path / "big.jpg", "purple", size=(1600, 1200))
    cache = ThumbnailCache(tmp_path / "thumbs", max_pixels=100_000_000)
    barrier = threading.Barrier(8)

    def fetch(_: int) -> bytes:
        barrier.wait()
        got = cache.get(7, str(source), "abcdef0123456789ffff")
        return got.read_bytes() if isinstance(got, Path) else got

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch, range(8)))
    assert len(set(results)) == 1
    assert Image.open(io.BytesIO(results[0])).size == (384, 288)
    assert sorted(p.name for p in (tmp_path / "thumbs").iterdir()) == ["7-abcdef0123456789.jpg"]

    # separate caches (as two server processes would be) racing on the same folder
    caches = [ThumbnailCache(tmp_path / "thumbs2", max_pixels=100_000_000) for _ in range(8)]
    barrier = threading.Barrier(8)

    def fetch_own(i: int) -> bytes:
        barrier.wait()
        got = caches[i].get(7, str(source), "abcdef0123456789ffff")
        return got.read_bytes() if isinstance(got, Path) else got

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch_own, range(8)))
    assert len(set(results)) == 1
    assert [p.name for p in (tmp_path / "thumbs2").iterdir()] == ["7-abcdef0123456789.jpg"]


def test_thumbnails_work_when_the_cache_cannot_be_written(
    client: TestClient, engine: Engine
) -> None:
    (engine.path / "thumbs").write_text("a file where the cache folder would be\n")
    r = client.get(f"/api/thumb/{ids_by_name(engine)['green.png']}")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).format == "JPEG"


# --- the page, OpenAPI, hosts, indexing ------------------------------------------------------
def test_page_and_static_files_need_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "no external resources"
    for asset in re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", html):
        assert client.get(asset).status_code == 200, asset
    assert "/api/search" in client.get("/static/app.js").text


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"get", "post"} <= set(paths["/api/search"])
    assert {"/api/info", "/api/image/{image_id}", "/api/thumb/{image_id}"} <= set(paths)
    assert "/api/index" not in paths  # read-only unless --allow-indexing
    assert client.get("/docs").status_code == 404  # Swagger UI would load a CDN


def test_loopback_servers_refuse_other_host_names(engine: Engine) -> None:
    app = create_app(engine, allowed_hosts=LOOPBACK_HOSTS)
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/info").status_code == 200
    assert TestClient(app, base_url="http://localhost:8000").get("/api/info").status_code == 200
    assert TestClient(app, base_url="http://[::1]:8000").get("/api/info").status_code == 200
    evil = TestClient(app, base_url="http://rebind.attacker.example:8000").get("/api/info")
    assert evil.status_code == 400 and "only answers" in evil.json()["detail"]
    assert host_of("[::1]:8000") == "::1" and host_of("LocalHost:80") == "localhost"


def test_indexing_endpoint_only_when_allowed(engine: Engine, tmp_path: Path) -> None:
    more = tmp_path / "more"
    make_image(more / "pink.png", "pink")
    read_only = TestClient(create_app(engine))
    assert read_only.post("/api/index", json={"paths": [str(more)]}).status_code in (404, 405)
    assert read_only.get("/api/info").json()["images"] == 7

    c = TestClient(create_app(engine, allow_indexing=True))
    forged = c.post("/api/index", content=f"paths={more}",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert 400 <= forged.status_code < 500
    assert c.get("/api/info").json()["images"] == 7
    r = c.post("/api/index", json={"paths": [str(more)]})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 1 and r.json()["index"] == str(engine.path)
    assert names(c.get("/api/search", params={"q": "pink", "k": 1}).json()) == ["pink.png"]
    assert "/api/index" in c.get("/openapi.json").json()["paths"]
    assert c.post("/api/index", json={"paths": []}).status_code == 422
    # the CLI's file options: only some extensions, then hidden files too
    extra = tmp_path / "extra"
    make_image(extra / "green.png", "green")
    make_image(extra / "blue.jpg", "blue")
    make_image(extra / ".secret.png", "red")
    r = c.post("/api/index", json={"paths": [str(extra)], "only_ext": [".png"]})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 1  # green.png: not the .jpg, not the hidden file
    r = c.post("/api/index", json={"paths": [str(extra)], "include_hidden": True})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 2  # blue.jpg and .secret.png
    bad = c.post("/api/index", json={"paths": [str(extra)], "ext": ["not an extension!"]})
    assert 400 <= bad.status_code < 500 and "ext" in bad.json()["detail"].lower(), bad.text


# --- the serve command -----------------------------------------------------------------------
def test_serve_help_and_missing_index() -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["serve", "--help"])
    assert result.exit_code == 0 and "--allow-indexing" in result.stdout
    assert "127.0.0.1" in result.stdout
    result = runner.invoke(cli_app, ["serve", "--index", "nope"])
    assert result.exit_code == 1 and "no index" in result.stderr


def test_help_does_not_import_the_web_stack() -> None:
    code = ("import sys; from vlmsearch.cli import app; from typer.testing import CliRunner;"
            "CliRunner().invoke(app, ['--help']); CliRunner().invoke(app, ['serve', '--help']);"
            "print(any(m in sys.modules for m in ('fastapi', 'uvicorn', 'starlette')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(index_dir: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """``vlmsearch serve`` in a subprocess; returns it and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from vlmsearch.cli import main; main()", "serve",
         "--index-dir", str(index_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    output = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output += line
        match = re.search(r"open (http://\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    errors = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"serve printed no URL: {output}{errors}")


def stop_server(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a person would; killed if it does not stop within 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@contextmanager
def serving(index_dir: Path, *args: str) -> Iterator[str]:
    """The URL of a ``vlmsearch serve`` of ``index_dir`` on a free port, for the block."""
    proc, url = start_server(index_dir, "--port", "0", *args)
    try:
        yield url
    finally:
        stop_server(proc)


@pytest.mark.slow
def test_serve_runs_a_real_server(engine: Engine) -> None:
    port = free_port()
    proc, url = start_server(engine.path, "--port", str(port))
    try:
        assert url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url + "api/search?q=blue&k=1", timeout=30) as r:
            assert Path(json.load(r)["results"][0]["path"]).name == "blue sky.jpg"
        with urllib.request.urlopen(url, timeout=30) as r:
            assert b"<title>vlmsearch</title>" in r.read()
        # a second server on the same port: a clear error, not a traceback
        second = subprocess.run(
            [sys.executable, "-c", "from vlmsearch.cli import main; main()", "serve",
             "--index-dir", str(engine.path), "--port", str(port)],
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "already in use" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        stop_server(proc)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)
