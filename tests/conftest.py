"""Shared fixtures: an isolated index home for every test, generated images, the tiny
open_clip model, and the location of the real data in ../shared."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.imagegen import make_image

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("VLMSEARCH_SHARED", REPO.parent / "shared"))
FLICKR = SHARED / "data" / "flickr8k"
MOBILENET = SHARED / "models" / "mobilenet_v2_imagenet" / "model.safetensors"
TINY_CLIP_CONFIG = Path(__file__).parent / "data" / "tiny-clip.json"

pytest_plugins = ["tests.skip_policy"]


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own index home, so no test sees another's (or the user's) indexes."""
    home = tmp_path_factory.mktemp("vlmsearch-home")
    monkeypatch.setenv("VLMSEARCH_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture
def tiny_clip_spec(tmp_path: Path) -> str:
    """A real open_clip model, tiny and with random (seeded) weights: the real code path in
    seconds, no download."""
    config = tmp_path / "tiny-clip.json"
    shutil.copy(TINY_CLIP_CONFIG, config)
    return f"openclip:{config}/random"


@pytest.fixture
def colour_tree(tmp_path: Path) -> Path:
    """A small photo folder: nested folders, unicode and space names, a broken JPEG, a text file
    named .jpg, an EXIF-rotated photo."""
    root = tmp_path / "photos"
    make_image(root / "red.jpg", "red")
    make_image(root / "green.png", "green")
    make_image(root / "holiday" / "blue sky.jpg", "blue")
    make_image(root / "holiday" / "ünïcode 黄色.webp", "yellow")
    make_image(root / "deep" / "a" / "b" / "c" / "purple.bmp", "purple")
    make_image(root / "rotated.jpg", "orange", size=(80, 40), orientation=6)
    broken = root / "broken.jpg"
    make_image(broken, "white")
    broken.write_bytes(broken.read_bytes()[:200])
    (root / "notes.jpg").write_text("this is not an image\n")
    return root


def needs_flickr() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not (FLICKR / "captions.tsv").is_file(),
        reason=f"the Flickr8k data is not at {FLICKR} (clone the project next to ../shared or set "
        "VLMSEARCH_SHARED)",
    )
