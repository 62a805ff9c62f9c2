"""Text in pictures (``--ocr``): how well phrases are found, what it costs descriptive
queries, and what it costs indexing, printed as one JSON object.

1. ``phrases``: a corpus rendered here (tests/textgen.py: pages, signs pasted on Flickr8k
   photos, screenshots; English and Chinese; several sizes, colours, slight rotations), mixed
   with Flickr8k dev photos that have no text, indexed with ``--ocr``. Recall@1 of each
   picture's phrase as the query, per language; and how many text-matched results queries for
   words in no picture return (should be none).
2. ``captions``: the Flickr8k dev split (1,000 photos, 5,000 captions) indexed with the shipped
   model and ``--ocr``: text→image R@1 of the captions with ``--match both`` and with
   ``--match semantic`` (the fusion must not cost descriptive queries more than 0.5).
3. ``throughput``: images/s of ``vlmsearch index`` with and without ``--ocr``, on Flickr8k
   photos (almost no text) and on the text-heavy rendered corpus, same model, fresh index each.

    python bench/ocr.py                          # everything (about half an hour on 2 cores)
    python bench/ocr.py --only phrases --per-language 60
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.textgen import make_corpus  # noqa: E402
from vlmsearch import Engine  # noqa: E402

FLICKR = REPO.parent / "shared" / "data" / "flickr8k"
MODEL = "flickr8k-mobilenetv2-minilm"
ABSENT = ["zebra crossing Q77", "xylophone repair shop", "kangaroo parking W42",
          "无线网络 火车站 999", "动物园 大象 123", "saxophone lessons"]


def _dev(n: int | None = None) -> list[Path]:
    names = (FLICKR / "dev.txt").read_text().split()
    return [FLICKR / "images" / name for name in names[:n]]


def phrases(work: Path, per_language: int, model: str) -> dict[str, object]:
    root = work / "phrases"
    shutil.rmtree(root, ignore_errors=True)
    photos = _dev(300)
    pictures = make_corpus(root / "text", per_language, photos[:per_language], seed=1)
    (root / "photos").mkdir(parents=True)
    for photo in photos[per_language:]:
        shutil.copy(photo, root / "photos" / photo.name)
    with Engine.open(work / "phrases-index", model=model) as eng:
        report = eng.index([root], ocr=True)
        recall: dict[str, list[bool]] = {"en": [], "zh": []}
        misses = []
        for picture in pictures:
            hits = eng.search(text=picture.phrase, k=1)
            ok = bool(hits) and hits[0].path == str(picture.path)
            recall[picture.language].append(ok)
            if not ok:
                misses.append({"phrase": picture.phrase, "style": picture.style,
                               "got": hits[0].path if hits else None})
        absent = {q: sum(h.matched != "semantic" for h in eng.search(text=q, k=20))
                  for q in ABSENT}
    shutil.rmtree(work / "phrases-index", ignore_errors=True)
    return {"pictures": len(pictures), "photos_without_text": len(photos) - per_language,
            "recall_at_1": {lang: round(sum(v) / len(v), 3) for lang, v in recall.items()},
            "misses": misses[:10], "absent_words_text_matches": absent,
            "ocr_with_text": report.ocr_with_text, "ocr_read": report.ocr_read}


def captions(work: Path, model: str) -> dict[str, object]:
    from vlmsearch.pairs import build_pairs

    split = build_pairs(FLICKR / "captions.tsv", FLICKR / "images", FLICKR / "dev.txt")
    index = work / "captions-index"
    shutil.rmtree(index, ignore_errors=True)
    with Engine.open(index, model=model) as eng:
        start = time.perf_counter()
        report = eng.index(split.images, ocr=True)
        seconds = time.perf_counter() - start
        out: dict[str, object] = {"images": len(split.images), "captions": len(split.captions),
                                  "index_seconds": round(seconds, 1),
                                  "ocr_with_text": report.ocr_with_text}
        by_path = {path: n for n, path in enumerate(split.images)}
        for mode in ("semantic", "both"):
            hits_at_1, text_matched = 0, 0
            for caption, owner in zip(split.captions, split.caption_image, strict=True):
                hits = eng.search(text=caption, k=1, match=mode)
                hits_at_1 += bool(hits) and by_path.get(hits[0].path) == owner
                text_matched += bool(hits) and hits[0].matched != "semantic"
            out[mode] = {"text_to_image_R@1": round(100 * hits_at_1 / len(split.captions), 2),
                         "first_result_text_matched": text_matched}
    out["loss_R@1"] = round(out["semantic"]["text_to_image_R@1"]  # type: ignore[index]
                            - out["both"]["text_to_image_R@1"], 2)  # type: ignore[index]
    shutil.rmtree(index, ignore_errors=True)
    return out


def throughput(work: Path, model: str, photos_n: int, text_n: int) -> dict[str, object]:
    text_root = work / "throughput-text"
    shutil.rmtree(text_root, ignore_errors=True)
    make_corpus(text_root, text_n // 2, _dev(text_n // 2), seed=5)
    photo_root = work / "throughput-photos"
    shutil.rmtree(photo_root, ignore_errors=True)
    photo_root.mkdir(parents=True)
    for photo in _dev(photos_n):
        shutil.copy(photo, photo_root / photo.name)
    with Engine.open(work / "warm", model=model) as eng:  # load and export the model once
        eng.index([photo_root / p.name for p in _dev(8)], ocr=True)
    shutil.rmtree(work / "warm", ignore_errors=True)
    out: dict[str, object] = {"model": model}
    for name, root in (("photos", photo_root), ("text_heavy", text_root)):
        n = len(list(root.rglob("*.jpg")))
        row: dict[str, object] = {"images": n}
        for ocr in (False, True):
            index = work / f"tp-{name}-{ocr}"
            shutil.rmtree(index, ignore_errors=True)
            with Engine.open(index, model=model) as eng:
                start = time.perf_counter()
                eng.index([root], ocr=ocr)
                seconds = time.perf_counter() - start
            row["with_ocr" if ocr else "without_ocr"] = round(n / seconds, 2)
            shutil.rmtree(index, ignore_errors=True)
        row["ratio"] = round(row["with_ocr"] / row["without_ocr"], 3)  # type: ignore[operator]
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["phrases", "captions", "throughput"])
    parser.add_argument("--per-language", type=int, default=60)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--text", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) /
                        "vlmsearch-bench-ocr")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"benchmark": "ocr"}
    if args.only in (None, "phrases"):
        result["phrases"] = phrases(args.work, args.per_language, args.model)
    if args.only in (None, "captions"):
        result["captions"] = captions(args.work, args.model)
    if args.only in (None, "throughput"):
        result["throughput"] = throughput(args.work, args.model, args.photos, args.text)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
