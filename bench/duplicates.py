"""Near-duplicate benchmark: pair precision and recall of `vlmsearch duplicates`, and its speed
at 100,000 contents. Prints JSON.

Quality: each of N Flickr8k dev photos (``dev.txt``, in list order) plus transformed copies:
resized to 50 %, JPEG quality 40, a 90 % crop (at a seeded offset), a 3° rotation, brightness
+15 % or −15 % (alternating), a PNG re-export, and a mirrored copy, which is *not* a duplicate.
They are indexed with the shipped model (``flickr8k-mobilenetv2-minilm``) and grouped with the
default rule; a predicted pair is two files in one exact or near group, a true pair two
non-mirrored files made from the same photo. Also reported: pairs of *different* photos grouped
(overall, and among the photos whose captions all say "dog" and "snow": same scene type, other
picture; "dog and snow" in at least 3 of a photo's 5 captions), the same figures for the
image vectors alone (no hash) and without the mirror test, and a grid of thresholds around
the defaults.

Speed: 100,000 synthetic unit vectors (512-d and 2048-d) with 64-bit hashes, 10 % of them
planted near copies of others, grouped with the default rule; reports seconds and the share of
planted pairs found.

    python bench/duplicates.py                  # 200 photos × 8 files, then the timings
    python bench/duplicates.py --photos 0       # every dev photo (slow on a CPU)
    python bench/duplicates.py --skip-speed     # quality only
    python bench/duplicates.py --skip-quality --skip-speed --store   # reading 100k from SQLite
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vlmsearch import Engine, Settings
from vlmsearch.duplicates import DuplicateRule, find_groups
from vlmsearch.store.records import ContentTable

FLICKR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "flickr8k"
MODEL = "flickr8k-mobilenetv2-minilm"
COPIES = ("original", "half", "q40", "crop90", "rot3", "bright", "png", "mirror")


def make_copies(src: Path, out: Path, n: int) -> None:
    """The original (as is) and its transformed copies, in ``out/<stem>/``."""
    rng = np.random.default_rng(n)
    folder = out / src.stem
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, folder / "original.jpg")
    im = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    w, h = im.size
    im.resize((w // 2, h // 2), Image.Resampling.LANCZOS).save(folder / "half.jpg", quality=90)
    im.save(folder / "q40.jpg", quality=40)
    cw, ch = int(w * 0.9), int(h * 0.9)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im.crop((x, y, x + cw, y + ch)).save(folder / "crop90.jpg", quality=90)
    im.rotate(3, resample=Image.Resampling.BICUBIC).save(folder / "rot3.jpg", quality=90)
    factor = 1.15 if n % 2 == 0 else 0.85
    ImageEnhance.Brightness(im).enhance(factor).save(folder / "bright.jpg", quality=90)
    im.save(folder / "png.png")
    ImageOps.mirror(im).save(folder / "mirror.jpg", quality=90)


def photo_and_copy(path: str) -> tuple[str, str]:
    p = Path(path)
    return p.parent.name, p.stem


def pairs_of(groups: list[list[str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for members in groups:
        out.update(tuple(sorted(pair)) for pair in itertools.combinations(members, 2))  # type: ignore[misc]
    return out


def score(table: ContentTable, rule: DuplicateRule, truth: set[tuple[str, str]],
          dog_snow: set[str]) -> dict[str, float | int]:
    groups = find_groups(table, rule)
    predicted = pairs_of([[m.path for m in g.members] for g in groups])
    hits = len(predicted & truth)
    cross = [(a, b) for a, b in predicted if photo_and_copy(a)[0] != photo_and_copy(b)[0]]
    mirrored = [(a, b) for a, b in predicted if "mirror" in (photo_and_copy(a)[1],
                                                            photo_and_copy(b)[1])]
    same_scene = [(a, b) for a, b in cross if photo_and_copy(a)[0] in dog_snow
                  and photo_and_copy(b)[0] in dog_snow]
    return {"precision": round(hits / len(predicted), 4) if predicted else 1.0,
            "recall": round(hits / len(truth), 4), "predicted_pairs": len(predicted),
            "true_pairs": len(truth), "different_photo_pairs": len(cross),
            "mirror_pairs": len(mirrored), "dog_snow_different_photo_pairs": len(same_scene),
            "groups": len(groups)}


def dog_snow_photos(names: list[str]) -> set[str]:
    captions: dict[str, list[str]] = defaultdict(list)
    with open(FLICKR / "captions.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            image, text = line.rstrip("\n").split("\t", 1)
            captions[Path(image).stem].append(text.lower())
    return {n for n in names
            if sum("dog" in c and "snow" in c for c in captions[n]) >= 3}


def quality(photos: int, work: Path, offset: int = 0) -> dict[str, object]:
    names = (FLICKR / "dev.txt").read_text().split()[offset:]
    if photos:
        names = names[:photos]
    files = work / "files"
    if not files.is_dir():
        for n, name in enumerate(names):
            make_copies(FLICKR / "images" / name, files, n)
    start = time.perf_counter()
    with Engine.open(work / "index", model=MODEL, settings=Settings()) as eng:
        report = eng.index([files])
        index_seconds = time.perf_counter() - start
        store = eng._handle.store  # the bench reuses one table for its threshold grid
        with store.read() as conn:
            table = store.contents(conn)
        start = time.perf_counter()
        eng.duplicates()
        group_seconds = time.perf_counter() - start
    by_photo: dict[str, list[str]] = defaultdict(list)
    for path in table.file_paths:
        photo, copy = photo_and_copy(path)
        if copy != "mirror":
            by_photo[photo].append(path)
    truth = pairs_of(list(by_photo.values()))
    stems = [Path(n).stem for n in names]
    dog_snow = dog_snow_photos(stems)
    default = DuplicateRule()
    no_hash = ContentTable(table.file_ids, table.file_paths, table.file_content, table.vectors,
                           table.hashes, np.zeros_like(table.has_hash))
    grid = []
    for base in (0.50, 0.54, 0.58, 0.62, 0.66):
        for slope in (0.008, 0.01, 0.012):
            for bits in (16, 18, 20, 22, 24):
                rule = DuplicateRule(near_cosine=base, near_cosine_per_bit=slope,
                                     near_bits=bits)
                result = score(table, rule, truth, dog_snow)
                grid.append({"near_cosine": base, "near_cosine_per_bit": slope,
                             "near_bits": bits, "precision": result["precision"],
                             "recall": result["recall"]})
    no_mirror_test = score(table, DuplicateRule(mirror_margin=99), truth, dog_snow)
    import vlmsearch.duplicates as dups  # the same, through the search used above 5,000

    exact_limit, dups.EXACT_LIMIT = dups.EXACT_LIMIT, 0
    try:
        reduced = score(table, default, truth, dog_snow)
    finally:
        dups.EXACT_LIMIT = exact_limit
    vector_only = []
    for cos in (0.80, 0.85, 0.90, 0.95):
        result = score(no_hash, DuplicateRule(vector_only_cosine=cos), truth, dog_snow)
        vector_only.append({"cosine": cos, "precision": result["precision"],
                            "recall": result["recall"]})
    return {
        "photos": len(names), "first_photo": offset, "files": len(table.file_paths), "model": MODEL,
        "index_added": report.added, "index_seconds": round(index_seconds, 1),
        "duplicates_seconds": round(group_seconds, 3),
        "dog_snow_photos": len(dog_snow),
        "default_rule": default.__dict__,
        "default": score(table, default, truth, dog_snow),
        "vectors_only": vector_only,
        "without_the_mirror_test": no_mirror_test,
        "default_through_reduced_search": reduced,
        "grid": grid,
    }


def synthetic(n: int, dim: int, seed: int = 0) -> tuple[ContentTable, set[tuple[int, int]]]:
    """``n`` unit vectors, the last 10 % near copies of earlier ones (small noise, a few hash
    bits flipped)."""
    rng = np.random.default_rng(seed)
    originals = n - n // 10
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    hashes = rng.integers(-2**63, 2**63 - 1, size=n, dtype=np.int64)
    sources = rng.choice(originals, size=n - originals, replace=False)
    noise = rng.standard_normal((n - originals, dim), dtype=np.float32)
    scale = 0.25 * np.linalg.norm(vecs[sources], axis=1, keepdims=True) / np.sqrt(dim)
    vecs[originals:] = vecs[sources] + scale * noise
    flips = np.stack([rng.choice(64, size=4, replace=False) for _ in sources]).astype(np.uint64)
    masks = np.bitwise_or.reduce(np.left_shift(np.uint64(1), flips), axis=1)
    unsigned = hashes.view(np.uint64)
    unsigned[originals:] = unsigned[sources] ^ masks
    planted = {(int(s), int(r)) for s, r in zip(sources, range(originals, n), strict=True)}
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(1, n + 1, dtype=np.int64)
    table = ContentTable(ids, [f"/synthetic/{i}.jpg" for i in range(n)], np.arange(n),
                         vecs, hashes, np.ones(n, dtype=bool))
    return table, planted


def speed(n: int) -> list[dict[str, object]]:
    out = []
    for dim in (512, 2048):
        table, planted = synthetic(n, dim)
        start = time.perf_counter()
        groups = find_groups(table)
        seconds = time.perf_counter() - start
        found: set[tuple[int, int]] = set()
        for g in groups:
            rows = sorted(m.id - 1 for m in g.members)
            found.update(itertools.combinations(rows, 2))
        recall = len({p for p in planted if p in found}) / len(planted)
        out.append({"contents": n, "dim": dim, "seconds": round(seconds, 2),
                    "groups": len(groups), "planted_pairs_found": round(recall, 4)})
        del table
    return out


def through_store(n: int, dim: int = 512) -> dict[str, object]:
    """The synthetic table written to a real metadata store (SQLite), then read back and
    grouped as ``Engine.duplicates`` does."""
    from vlmsearch.store.metadata import MetadataStore
    from vlmsearch.store.records import IndexedFile

    table, _ = synthetic(n, dim)
    folder = Path(tempfile.mkdtemp(prefix="vlmsearch-dups-store-"))
    store = MetadataStore(f"sqlite:///{folder / 'meta.sqlite'}", dim=dim)
    start = time.perf_counter()
    for begin in range(0, n, 10_000):
        store.apply([IndexedFile(f"/photos/{i:06d}.jpg", 1000, 1, f"{i:064x}", 10, 10,
                                 table.vectors[i], phash=int(table.hashes[i]))
                     for i in range(begin, min(n, begin + 10_000))])
    filled = time.perf_counter() - start
    start = time.perf_counter()
    with store.read() as conn:
        read = store.contents(conn)
    read_seconds = time.perf_counter() - start
    start = time.perf_counter()
    groups = find_groups(read)
    group_seconds = time.perf_counter() - start
    store.engine.dispose()
    shutil.rmtree(folder, ignore_errors=True)
    return {"contents": n, "dim": dim, "write_seconds": round(filled, 1),
            "read_seconds": round(read_seconds, 2), "group_seconds": round(group_seconds, 2),
            "groups": len(groups)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200,
                        help="dev photos to use (0: all of dev.txt)")
    parser.add_argument("--offset", type=int, default=0,
                        help="start at this photo of dev.txt (a second set to check the "
                        "defaults on photos they were not chosen on)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the generated files and index here (reused next time)")
    parser.add_argument("--contents", type=int, default=100_000)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--store", action="store_true",
                        help="also time reading the 100k synthetic contents from a metadata "
                        "store (512-d)")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    result: dict[str, object] = {"cpu_count": os.cpu_count()}
    if not args.skip_quality:
        work = args.work or Path(tempfile.mkdtemp(prefix="vlmsearch-dups-"))
        work.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("VLMSEARCH_HOME", str(work / "home"))
        result["quality"] = quality(args.photos, work, args.offset)
    if not args.skip_speed:
        result["speed"] = speed(args.contents)
    if args.store:
        result["through_store"] = through_store(args.contents)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
