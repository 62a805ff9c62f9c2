"""Finding pictures by the words in them: text read at index time (``--ocr``, RapidOCR offline)
and file names, ranked together with the embedding."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import FLICKR
from tests.imagegen import make_image
from tests.textgen import cjk_font, make_corpus, screen
from vlmsearch import Engine, Filter, ModelUnavailableError
from vlmsearch.cli import app
from vlmsearch.ocr import OcrResult, TextReader

runner = CliRunner()
needs_font = pytest.mark.skipif(cjk_font() is None, reason="no CJK font to render test text "
                                "(apt-get install fonts-wqy-microhei; .ci/run installs it)")
needs_photos = pytest.mark.skipif(not (FLICKR / "dev.txt").is_file(),
                                  reason=f"the Flickr8k photos are not at {FLICKR}")


def _photos(n: int) -> list[Path]:
    names = (FLICKR / "dev.txt").read_text().split()[:n]
    return [FLICKR / "images" / name for name in names]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:  # type: ignore[type-arg]
    if cjk_font() is None or not (FLICKR / "dev.txt").is_file():
        pytest.skip("needs a CJK font and the Flickr8k photos")
    root = tmp_path_factory.mktemp("ocr-corpus")
    pictures = make_corpus(root / "text", 12, _photos(12), seed=3)
    plain = _mkdir(root / "photos")
    for photo in _photos(40)[12:]:  # photos without text beside them
        shutil.copy(photo, plain / photo.name)
    index = tmp_path_factory.mktemp("ocr-index") / "index"
    with Engine.open(index, model="fake") as eng:
        report = eng.index([root], ocr=True)
        assert report.ocr_read == len(pictures) + 28 and report.ocr_failed == 0
        assert report.ocr_with_text >= len(pictures) - 2
    return index, pictures


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.slow
@needs_font
@needs_photos
def test_phrases_find_their_picture_in_english_and_chinese(corpus: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    index, pictures = corpus
    found: dict[str, list[bool]] = {"en": [], "zh": []}
    with Engine.open(index, create=False) as eng:
        for picture in pictures:
            hits = eng.search(text=picture.phrase, k=3)
            first = hits[0] if hits else None
            found[picture.language].append(first is not None and first.path == str(picture.path)
                                           and first.matched in ("text", "both"))
        recall = {lang: sum(ok) / len(ok) for lang, ok in found.items()}
        print(json.dumps({"recall_at_1": recall, "pictures": len(pictures)}))
        assert recall["en"] >= 0.9 and recall["zh"] >= 0.9, recall
        hit = eng.search(text=pictures[0].phrase, k=1)[0]
        assert hit.ocr and hit.ocr_spans
        for start, end in hit.ocr_spans:
            assert hit.ocr[start:end].lower() in pictures[0].phrase.lower()
        for absent in ("zebra crossing Q77", "无线网络 火车站 999", "xylophone"):
            assert all(h.matched == "semantic" for h in eng.search(text=absent, k=10)), absent
        assert eng.info().with_text >= len(pictures) - 2


@pytest.mark.slow
@needs_font
@needs_photos
def test_match_modes_and_filters_combine_with_text(corpus: tuple[Path, list]) -> None:  # type: ignore[type-arg]
    index, pictures = corpus
    target = next(p for p in pictures if p.language == "zh")
    with Engine.open(index, create=False) as eng:
        only_text = eng.search(text=target.phrase, match="text", k=5)
        assert [h.path for h in only_text] == [str(target.path)]
        assert only_text[0].score is not None  # its cosine to the query, for comparison
        semantic = eng.search(text=target.phrase, match="semantic", k=5)
        assert all(h.matched == "semantic" and h.ocr is None for h in semantic)
        elsewhere = Filter(folders=[str(Path(target.path).parent.parent / "photos")])
        assert all(h.matched == "semantic"
                   for h in eng.search(text=target.phrase, where=elsewhere, k=5))
        inside = Filter(types=["jpg"], folders=[str(Path(target.path).parent)])
        assert eng.search(text=target.phrase, where=inside, k=1)[0].path == str(target.path)


def test_file_and_folder_names_are_searched_without_ocr(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_image(root / "receipts" / "2023" / "acme-store.png", "white")
    make_image(root / "holiday" / "beach.png", "blue")
    make_image(root / "holiday" / "flamingo-receipt.png", "pink")
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([root])
        hits = eng.search(text="acme receipt", k=3)
        assert hits[0].path.endswith("acme-store.png") and hits[0].matched in ("text", "both")
        assert hits[0].ocr is None  # a name matched, not text in the picture
        named = {h.path.rsplit("/", 1)[1] for h in eng.search(text="receipt", match="text")}
        assert named == {"acme-store.png", "flamingo-receipt.png"}
        assert eng.search(text="invoice", match="text") == []
        eng.remove([root / "receipts"])
        assert eng.search(text="acme", match="text") == []


def test_text_is_read_once_per_content_and_failures_spare_the_embedding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    for colour in ("red", "green", "blue"):
        make_image(root / f"{colour}.png", colour)
    shutil.copy(root / "red.png", root / "red copy.png")
    read: list[str] = []

    def fake_read(self: TextReader, path: str, *, max_pixels: int = 0) -> OcrResult:
        read.append(Path(path).name)
        if "green" in path:
            return OcrResult(error="text recognition failed: boom")
        return OcrResult(text=f"label of {Path(path).stem}")

    monkeypatch.setattr(TextReader, "read_file", fake_read)
    monkeypatch.setattr(TextReader, "check", lambda self: None)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        report = eng.index([root], ocr=True)
        assert (report.added, report.ocr_read, report.ocr_failed) == (4, 3, 1)
        assert len(read) == 3  # the copy shares its content's text
        assert eng.search(text="green", k=1)[0].path.endswith("green.png")  # still embedded
        copies = {h.path.rsplit("/", 1)[1] for h in eng.search(text="label red", match="text")}
        assert copies == {"red.png", "red copy.png"}
        make_image(root / "new.png", "pink")
        again = eng.index([root])  # the index remembers --ocr
        assert again.ocr_read == 1 and read[-1] == "new.png"
        info = eng.info()
        assert (info.ocr, info.with_text, info.ocr_failed) == (True, 4, 1)
        eng.index([root], ocr=False)
        make_image(root / "newer.png", "gray")
        assert eng.index([root]).ocr_read == 0 and not eng.info().ocr


def test_turning_ocr_on_reads_an_existing_index_without_reembedding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    for colour in ("red", "green", "blue", "gray"):
        make_image(root / f"{colour}.png", colour)
    monkeypatch.setattr(TextReader, "read_file",
                        lambda self, path, max_pixels=0: OcrResult(text=Path(path).stem + " sign"))
    monkeypatch.setattr(TextReader, "check", lambda self: None)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([root])
        report = eng.index([root], ocr=True)
        assert (report.encoded, report.unchanged, report.ocr_read) == (0, 4, 4)
        assert eng.search(text="gray sign", match="text")[0].path.endswith("gray.png")


def test_missing_rapidocr_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    make_image(tmp_path / "p" / "a.png", "red")
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # what a missing package looks like
    with Engine.open(tmp_path / "index", model="fake") as eng:
        with pytest.raises(ModelUnavailableError, match="pip install rapidocr"):
            eng.index([tmp_path / "p"], ocr=True)
        assert not eng.info().ocr  # nothing half-switched


def test_a_run_without_ocr_never_loads_it(tmp_path: Path) -> None:
    make_image(tmp_path / "p" / "a.png", "red")
    code = ("import sys; from vlmsearch import Engine\n"
            f"with Engine.open({str(tmp_path / 'i')!r}, model='fake') as eng:\n"
            f"    eng.index([{str(tmp_path / 'p')!r}]); eng.search(text='red receipt')\n"
            "assert 'rapidocr' not in sys.modules and 'cv2' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@needs_font
def test_the_command_line_reads_text_and_says_how_it_matched(tmp_path: Path) -> None:
    root = tmp_path / "shots"
    screen("boarding pass gate B12", random.Random(1)).save(_mkdir(root) / "pass.png")
    make_image(root / "red.png", "red")
    index = tmp_path / "i"
    done = runner.invoke(app, ["index", str(root), "--model", "fake", "--ocr", "--index-dir",
                               str(index)])
    assert done.exit_code == 0, done.stderr
    assert "read text in 2 pictures (1 with text" in done.stdout
    out = runner.invoke(app, ["query", "gate B12", "--index-dir", str(index), "--json"])
    first = json.loads(out.stdout)[0]
    assert first["path"].endswith("pass.png") and first["matched"] in ("text", "both")
    assert "B12" in first["ocr"]
    table = runner.invoke(app, ["query", "gate B12", "--index-dir", str(index)])
    assert "text in the picture" in table.stdout
    bad = runner.invoke(app, ["query", "--image", str(root / "red.png"), "--match", "text",
                              "--index-dir", str(index)])
    assert bad.exit_code == 2 and "give a TEXT" in bad.stderr
