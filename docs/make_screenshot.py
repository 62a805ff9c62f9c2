"""Make ``docs/screenshot.png``, the README's picture of the search page, from real photos.

    python docs/make_screenshot.py                      # 800 Flickr8k photos, the README query
    python docs/make_screenshot.py --images 2000 --query "children playing on the beach"

What it does, with nothing but vlmsearch's own commands: links the first ``--images`` Flickr8k
photos (``../shared/data/flickr8k/images``, or ``$VLMSEARCH_SHARED``) into a folder, indexes
them with the shipped model (``vlmsearch index --model flickr8k-mobilenetv2-minilm``), starts
``vlmsearch serve --port 0``, searches for ``--query`` in Debian's chromium (headless, driven
by Playwright: ``pip install -e '.[dev]'`` and ``apt-get install chromium``), waits for every
thumbnail and saves the page as a 1280×860 PNG of 256 colours (after one warm-up query, so the
time on the page is a warm query's). Work files (the index, the ONNX caches) stay in ``--work``
so a second run only re-photographs. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("VLMSEARCH_SHARED", REPO.parent / "shared"))
FLICKR = SHARED / "data" / "flickr8k" / "images"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHIPPED = "flickr8k-mobilenetv2-minilm"


def vlmsearch(*args: str, env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "vlmsearch.cli", *args]


def start_server(index: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(vlmsearch("serve", "--index-dir", str(index), "--port", "0",
                                      env=env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"open (http://\S+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise SystemExit(f"vlmsearch serve printed no URL: {proc.stderr.read() if proc.stderr else ''}")


def shrink(png: Path) -> None:
    """256 colours, dithered: a third of the bytes of the full-colour PNG (0.34 vs 0.98 MB),
    and the photos still look like photos."""
    from PIL import Image

    with Image.open(png) as shot:
        small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                             dither=Image.Dither.FLOYDSTEINBERG)
    small.save(png, optimize=True)


def photograph(url: str, query: str, out: Path) -> int:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.fill("#q", query)
        page.press("#q", "Enter")
        expect(page.locator("#status")).to_contain_text(re.compile(r"results in"),
                                                        timeout=120_000)
        page.wait_for_function("() => { const i = [...document.querySelectorAll('.card img')];"
                               " return i.length > 0 && i.every(x => x.complete &&"
                               " x.naturalWidth > 0); }")
        page.mouse.move(0, 0)
        page.screenshot(path=str(out), full_page=False)
        shrink(out)
        cards = page.locator(".card").count()
        browser.close()
    return cards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--query", default="a dog running through the snow")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "vlmsearch-screenshot")
    args = parser.parse_args()

    photos = sorted(FLICKR.glob("*.jpg"))[: args.images]
    if not photos:
        raise SystemExit(f"no Flickr8k photos in {FLICKR} (set VLMSEARCH_SHARED)")
    folder = args.work / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        link = folder / photo.name
        if not link.exists():
            link.symlink_to(photo)
    env = dict(os.environ, VLMSEARCH_HOME=str(args.work / "home"))
    index = args.work / "index"
    start = time.perf_counter()
    subprocess.run(vlmsearch("index", str(folder), "--index-dir", str(index), "--model",
                             SHIPPED, "--json", env=env),
                   check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    indexed_s = time.perf_counter() - start
    proc, url = start_server(index, env)
    try:
        # one query first, so the page shows a warm query's time rather than the load of the
        # text tower that the server's first query pays
        warm = f"{url}api/search?{urllib.parse.urlencode({'q': args.query, 'k': 1})}"
        with urllib.request.urlopen(warm, timeout=300) as response:
            response.read()
        cards = photograph(url, args.query, args.out)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(json.dumps({"screenshot": str(args.out), "photos": len(photos), "query": args.query,
                      "results_shown": cards, "index_seconds": round(indexed_s, 1)}))


if __name__ == "__main__":
    main()
