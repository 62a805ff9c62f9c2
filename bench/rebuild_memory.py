"""Peak memory of rebuilding a FAISS file from the metadata store, printed as one JSON object.

A rebuild (the collection outgrew its index type, or a damaged file) streams the vectors out of
the database in chunks into the new index; an IVF index is trained on a bounded sample and
calibrated against exact answers gathered from the same stream. The target: peak RSS of the
process at most the size of the finished index plus 1 GiB.

For each dimension, a metadata database of N synthetic vectors (unit, clustered like real
embeddings) is written straight into SQLite (no images), then a fresh process opens it and runs
the engine's rebuild (``vlmsearch.store.sync.rebuild``), writes the FAISS file and reports its
peak RSS (VmHWM, read right after the save), the RSS before the rebuild, the finished index's
size (its file: FAISS writes the lists' contents as it holds them), and the time.

    python bench/rebuild_memory.py                       # 1M vectors at 512 and 2,048 dims
    python bench/rebuild_memory.py --n 200000 --dims 512
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GIB = 2**30
CHUNK = 20_000


def make_database(path: Path, n: int, dim: int, seed: int = 0) -> None:
    """N files and their vectors, written with the store's own schema."""
    from vlmsearch.store.database import sqlite_url
    from vlmsearch.store.metadata import MetadataStore
    from vlmsearch.store.records import ModelRecord

    store = MetadataStore(sqlite_url(path), dim=dim)
    store.record_model(ModelRecord(f"fake:{dim}", f"fake-colours-v1-d{dim}", dim))
    store.close()
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        x = centres[rng.integers(0, len(centres), m)] + 0.04 * rng.standard_normal(
            (m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        rows = range(start, start + m)
        db.executemany("insert into vectors (digest, vec) values (?, ?)",
                       ((f"{i:032x}", x[i - start].astype(np.float32).tobytes()) for i in rows))
        db.executemany(
            "insert into files (path, path_key, size, mtime_ns, digest, width, height, status, "
            "error, seq, indexed_at, unavailable) values (?, ?, 3000000, 0, ?, 4000, 3000, "
            "'ok', null, 1, 0, 0)",
            ((path, path, f"{i:032x}") for i in rows
             for path in [os.fsencode(f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg")]))
        db.commit()
    db.execute("update meta set value = '1' where key = 'seq'")
    db.commit()
    db.close()


def _vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measure(path: Path, dim: int, out: Path) -> dict[str, object]:
    """In this (fresh) process: rebuild from the database, write the FAISS file."""
    from vlmsearch.store.database import sqlite_url
    from vlmsearch.store.metadata import MetadataStore
    from vlmsearch.store.sync import rebuild

    store = MetadataStore(sqlite_url(path), dim=dim)
    before = _vm("VmRSS")
    start = time.perf_counter()
    with store.read() as conn:
        index, _ = rebuild(store, "image", dim, conn, exact_limit=100_000)
    seconds = time.perf_counter() - start
    index.save(out)
    peak = _vm("VmHWM")  # before anything else is allocated
    in_memory = out.stat().st_size  # FAISS writes its lists as they are held in memory
    return {"dim": dim, "vectors": index.count, "index_type": index.kind,
            "nprobe": index.tuning.nprobe, "recall_at_10": index.tuning.recall_at_10,
            "seconds": round(seconds, 1), "rss_before_gib": round(before / GIB, 3),
            "peak_rss_gib": round(peak / GIB, 3), "index_gib": round(in_memory / GIB, 3),
            "peak_minus_index_gib": round((peak - in_memory) / GIB, 3),
            "within_target": peak <= in_memory + GIB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--folder", type=Path, default=None,
                        help="where to keep the synthetic databases (default: a temp folder)")
    parser.add_argument("--measure", nargs=2, metavar=("DB", "DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child process
        db, dim = Path(args.measure[0]), int(args.measure[1])
        print(json.dumps(measure(db, dim, db.with_suffix(".faiss"))))
        return
    folder = args.folder or Path(tempfile.mkdtemp(prefix="vlmsearch-rebuild-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for dim in args.dims:
        db = folder / f"meta-{args.n}-{dim}.sqlite"
        if not db.exists():
            t = time.perf_counter()
            make_database(db, args.n, dim)
            print(f"wrote {db} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        child = subprocess.run([sys.executable, __file__, "--measure", str(db), str(dim)],
                               capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "rebuild_memory", "n": args.n, "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
