"""Query latency and memory, printed as one JSON object.

1. ``warm``: in-process search latency over synthetic unit vectors (512-d, clustered like real
   embeddings) at 10k, 100k and 1M vectors, with the index type vlmsearch picks for that size,
   and recall@10 of that index against exact search on held-out queries.
2. ``cold``: wall time of a fresh ``vlmsearch query "..."`` process on an index of 100k images
   built with the default architecture (``openclip:ViT-B-32/random``: random weights cost the
   same as trained ones), with the fast text path (ONNX) and without it (torch), median of runs.
3. ``memory``: peak RSS of a process serving the 1M-vector index (open + 200 queries).
4. ``filtered``: searches among the images matching a date filter that selects 0.1 %, 1 %,
   10 % and 100 % of a 1M-image index (IVF), through ``Engine.search_vector(where=...)``
   (everything a filtered query does but encoding its text): median and p95 latency, and
   recall@10 against an exact search of the matching images; plus the one-time load of the
   filter columns.
5. ``backfill``: reading the photo metadata (EXIF date, camera, GPS, place) of 10,000 indexed
   JPEGs from their headers, as an index made before vlmsearch read it does on its next run.

    python bench/query_latency.py                 # everything (the 1M index takes minutes)
    python bench/query_latency.py --sizes 10000 100000 --skip-cold

The synthetic indexes are built by writing rows straight into the metadata store (no images
are decoded); paths are fake. Vectors: 2,000 Gaussian cluster centres, points with noise,
normalised; held-out queries are new points (half) and midpoints of two points (half).
Run ``VLMSEARCH_NO_FAST_TEXT=1`` to see what a query costs without the ONNX text path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vlmsearch import Engine, Settings  # noqa: E402
from vlmsearch.store.records import IndexedFile  # noqa: E402
from vlmsearch.store.vectors import VectorIndex  # noqa: E402

DIM = 512


def synthetic(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # noise of norm ~0.9 around unit centres: a point's cosine to its centre is about 0.75
    x = centres[rng.integers(0, len(centres), n)] + 0.04 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def queries(n: int, centres: np.ndarray) -> np.ndarray:
    a = synthetic(n, 999, centres)
    b = synthetic(n, 998, centres)
    mids = a[: n // 2] + b[: n // 2]
    mids /= np.linalg.norm(mids, axis=1, keepdims=True)
    return np.concatenate([a[n // 2:], mids]).astype(np.float32)


def recall_at_10(index: VectorIndex, vecs: np.ndarray, ids: np.ndarray, q: np.ndarray) -> float:
    import faiss

    exact = faiss.IndexFlatIP(DIM)
    exact.add(vecs)
    _, truth = exact.search(q, 10)
    _, found = index.search(q, 10)
    hits = sum(len(set(ids[t].tolist()) & set(f.tolist())) for t, f in zip(truth, found,
                                                                          strict=True))
    return hits / (10 * len(q))


def warm(sizes: list[int], centres: np.ndarray) -> list[dict[str, object]]:
    out = []
    q = queries(200, centres)
    for n in sizes:
        vecs = synthetic(n, 1, centres)
        ids = np.arange(n, dtype=np.int64) + 1
        start = time.perf_counter()
        index = VectorIndex.build(DIM, ids, vecs)
        build_s = time.perf_counter() - start
        for row in q[:10]:
            index.search(row[None], 10)
        times = []
        for row in q:
            t = time.perf_counter()
            index.search(row[None], 10)
            times.append((time.perf_counter() - t) * 1000)
        out.append({
            "vectors": n, "index_type": index.kind, "nprobe": index.tuning.nprobe,
            "build_s": round(build_s, 2),
            "latency_ms": {"median": round(statistics.median(times), 3),
                           "p95": round(float(np.percentile(times, 95)), 3)},
            "recall_at_10": round(recall_at_10(index, vecs, ids, q), 4),
            "calibrated_recall_at_10": index.tuning.recall_at_10,
        })
        del vecs, index
    return out


def build_index(folder: Path, n: int, model: str, centres: np.ndarray) -> Path:
    """An index of ``n`` fake images with synthetic vectors, written through the store."""
    index_dir = folder / f"index-{n}"
    if (index_dir / "manifest.json").exists():
        return index_dir
    settings = Settings()
    with Engine.open(index_dir, model=model, settings=settings) as eng:
        vecs = synthetic(n, 1, centres)
        chunk = 20_000
        for start in range(0, n, chunk):
            rows = [IndexedFile(f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg", 3_000_000, 0,
                                f"{i:032x}", 4000, 3000, vecs[i])
                    for i in range(start, min(n, start + chunk))]
            eng._handle.store.apply(rows)
        eng._handle.vectors.save("image")
        eng.warm_up()
        eng._export_fast_text()
    return index_dir


def cold(index_dir: Path, runs: int) -> dict[str, object]:
    def timed(env: dict[str, str]) -> list[float]:
        walls = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vlmsearch.cli", "query", "a cat chasing a dog",
                            "--index-dir", str(index_dir), "--json"], check=True,
                           capture_output=True, env=env)
            walls.append(time.perf_counter() - start)
        return walls

    import os

    fast = timed(dict(os.environ))
    slow = timed({**os.environ, "VLMSEARCH_NO_FAST_TEXT": "1"})
    return {"runs": runs, "fast_path_wall_s": {"median": round(statistics.median(fast), 3),
                                               "all": [round(x, 3) for x in fast]},
            "torch_path_wall_s": {"median": round(statistics.median(slow), 3),
                                  "all": [round(x, 3) for x in slow]}}


def serving_memory(index_dir: Path) -> dict[str, object]:
    # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts from the parent's peak at
    # fork (folded in at exec), which reported this benchmark's own 11 GB as the server's
    code = (
        "import sys, time, resource, numpy as np; from vlmsearch import Engine;"
        "peak = lambda: next((int(l.split()[1]) for l in open('/proc/self/status')"
        " if l.startswith('VmHWM:')), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss);"
        "eng = Engine.open(sys.argv[1], create=False); rng = np.random.default_rng(0);"
        "t = time.perf_counter();"
        "unit = lambda v: v / np.linalg.norm(v);"
        "[eng.search_vector(unit(rng.standard_normal(512).astype('float32')), k=10)"
        " for _ in range(200)];"
        "print(time.perf_counter() - t, peak())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(index_dir)], capture_output=True,
                         text=True, check=True).stdout.split()
    return {"queries": 200, "seconds": round(float(out[0]), 3),
            "peak_rss_mb": round(int(out[1]) / 1024, 1)}


FILTER_DIM = 512
YEARS = 10


def build_filtered_index(folder: Path, n: int, centres: np.ndarray) -> tuple[Path, np.ndarray,
                                                                              np.ndarray]:
    """An index of ``n`` fake images with synthetic vectors and dates spread over ten years
    (fake:512 model: the same vectors an encoder would give, no model needed)."""
    from vlmsearch.photo_meta import PhotoMeta

    index_dir = folder / f"filtered-{n}"
    vecs = synthetic(n, 3, centres)
    taken = np.random.default_rng(4).uniform(1.42e9, 1.42e9 + YEARS * 365.25 * 86400, n)
    if not (index_dir / "manifest.json").exists():
        with Engine.open(index_dir, model=f"fake:{FILTER_DIM}") as eng:
            chunk = 20_000
            for start in range(0, n, chunk):
                rows = [IndexedFile(f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg", 3_000_000, 0,
                                    f"{i:032x}", 4000, 3000, vecs[i],
                                    PhotoMeta(taken="x", taken_ts=float(taken[i])))
                        for i in range(start, min(n, start + chunk))]
                eng._handle.store.apply(rows)
            eng._handle.vectors.save("image")
    return index_dir, vecs, taken


def filtered(folder: Path, n: int, centres: np.ndarray, n_queries: int = 100
             ) -> dict[str, object]:
    from datetime import datetime, timezone

    from vlmsearch import Filter

    index_dir, vecs, taken = build_filtered_index(folder, n, centres)
    order = np.argsort(taken)
    q = queries(n_queries, centres)
    rng = np.random.default_rng(5)

    def moment(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, tz=timezone.utc).replace(tzinfo=None)

    out: dict[str, object] = {"vectors": n}
    with Engine.open(index_dir, create=False) as eng:
        start = time.perf_counter()
        eng.search_vector(q[0], k=10, where=Filter(after="1990"))  # loads the columns once
        out["columns_load_s"] = round(time.perf_counter() - start, 3)
        out["index_type"] = eng.info().index_type
        for fraction in (0.001, 0.01, 0.1, 1.0):
            m = max(1, int(n * fraction))
            asked = []
            for row in q:
                first = int(rng.integers(0, n - m + 1))
                rows = order[first:first + m]  # the m images of one date window
                where = Filter(after=moment(taken[rows[0]]), before=moment(taken[rows[-1]]))
                truth = rows[np.argsort(-(vecs[rows] @ row))[:10]] + 1  # ids start at 1
                asked.append((row, where, set(truth.tolist())))
            # the exact answers first: NumPy's BLAS threads stay busy a while after a product,
            # and timing a query right after one measured them, not the query
            times, hits = [], 0
            for row, where, truth in asked:
                t = time.perf_counter()
                found = eng.search_vector(row, k=10, where=where)
                times.append((time.perf_counter() - t) * 1000)
                hits += len({h.id for h in found} & truth)
            out[f"{fraction * 100:g}%"] = {
                "matching": m,
                "latency_ms": {"median": round(statistics.median(times), 3),
                               "p95": round(float(np.percentile(times, 95)), 3)},
                "recall_at_10": round(hits / (10 * len(q)), 4)}
    return out


def backfill(folder: Path, n: int = 10_000) -> dict[str, object]:
    """Time the metadata backfill of ``n`` real JPEGs with EXIF blocks."""
    import sqlite3

    from PIL import Image

    photos = folder / f"exif-photos-{n}"
    if not photos.exists():
        rng = np.random.default_rng(6)
        for i in range(n):
            exif = Image.Exif()
            exif[0x010F], exif[0x0110] = "Canon", f"EOS {i % 7}D"
            exif.get_ifd(0x8769)[0x9003] = f"20{10 + i % 14:02d}:0{1 + i % 9}:1{i % 9} 12:00:00"
            gps = exif.get_ifd(0x8825)
            gps[1], gps[2] = "N", (float(30 + i % 30), 10.0, 0.0)
            gps[3], gps[4] = "E", (float(i % 60), 5.0, 0.0)
            sub = photos / f"{i // 1000:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            Image.new("RGB", (64, 48), colour).save(sub / f"{i:05d}.jpg", exif=exif.tobytes())
    index_dir = folder / f"backfill-{n}"
    with Engine.open(index_dir, model="fake") as eng:
        eng.index([photos])
    db = sqlite3.connect(index_dir / "meta.sqlite")
    db.execute("update files set meta_version = 0, taken = null, taken_ts = null, lat = null, "
               "lon = null, camera_make = null, camera_model = null, place_city = null")
    db.commit()
    db.close()
    with Engine.open(index_dir, create=False) as eng:
        report = eng.index([photos])
        info = eng.info()
    return {"images": n, "metadata_read": report.metadata_read,
            "seconds": round(report.metadata_seconds, 2),
            "seconds_per_10000": round(report.metadata_seconds * 10_000 / n, 2),
            "encoded": report.encoded, "with_date": info.with_date,
            "with_position": info.with_position}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--model", default="openclip:ViT-B-32/random")
    parser.add_argument("--cold-size", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--memory-size", type=int, default=1_000_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--filtered-size", type=int, default=1_000_000)
    parser.add_argument("--skip-filtered", action="store_true")
    parser.add_argument("--skip-backfill", action="store_true")
    parser.add_argument("--only", choices=["filtered", "backfill"], default=None,
                        help="run only this part")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "vlmsearch-bench")
    args = parser.parse_args()
    centres = np.random.default_rng(7).standard_normal((2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"benchmark": "query_latency"}
    if args.only:
        part = (filtered(args.work, args.filtered_size, centres) if args.only == "filtered"
                else backfill(args.work))
        print(json.dumps({**result, args.only: part}, indent=2))
        return
    result["warm"] = warm(args.sizes, centres)
    if not args.skip_filtered:
        result["filtered"] = filtered(args.work, args.filtered_size, centres)
    if not args.skip_backfill:
        result["backfill"] = backfill(args.work)
    if not args.skip_cold:
        index_dir = build_index(args.work, args.cold_size, args.model, centres)
        result["cold"] = {"images": args.cold_size, "model": args.model,
                          **cold(index_dir, args.runs)}
    if not args.skip_memory:
        index_dir = build_index(args.work, args.memory_size, args.model, centres)
        result["memory_serving"] = {"vectors": args.memory_size, **serving_memory(index_dir)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
