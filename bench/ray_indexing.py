"""Indexing throughput of ``--engine ray`` against the local engine: same corpus, same model,
fresh indexes, one JSON object.

For each engine it runs a real ``vlmsearch index`` process and reports ``images_per_s`` from
its JSON report's ``seconds`` (walk, decode, encode, commit, FAISS; the Ray run includes
connecting to / starting Ray and starting its actors, which is what a user waits for) and the
process wall time. ``ray_overhead`` is ``local images/s ÷ ray images/s``: above 1 the cluster
costs more than it brings (expected on one small machine), below 1 it pays.

This machine (2 cores, no GPU)::

    python bench/ray_indexing.py                                   # tiny open_clip, 200 photos
    python bench/ray_indexing.py --model openclip:ViT-B-32/random --medium 60 --big 0

A GPU machine (one GPU actor, decoding spread over 15 CPU tasks)::

    python bench/ray_indexing.py --model openclip:ViT-B-32/random --big 200 --medium 800 \\
        --gpus-per-worker 1 --ray-workers 1 --batch-size 128 --device cuda

A cluster: start Ray on the nodes (``ray start --head`` / ``ray start --address``), put the
corpus on a filesystem every node mounts at the same path, then add
``--ray-address HEAD:6379 --corpus /shared/photos``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.corpus import photo_corpus  # noqa: E402

TINY_CLIP = REPO / "tests" / "data" / "tiny-clip.json"


def _run(cmd: list[str]) -> tuple[dict[str, object], float]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"openclip:{TINY_CLIP}/random")
    parser.add_argument("--corpus", type=Path, help="index this folder instead of generating")
    parser.add_argument("--big", type=int, default=0, help="generated 4000×3000 JPEGs")
    parser.add_argument("--medium", type=int, default=200, help="generated 1600×1200 JPEGs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ray-address", help="default: a private Ray instance on this machine")
    parser.add_argument("--ray-workers", type=int, default=0)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vlmsearch-raybench-"))
    try:
        corpus = args.corpus or work / "photos"
        if args.corpus is None:
            photo_corpus(corpus, big=args.big, medium=args.medium)
        n_files = sum(1 for p in corpus.rglob("*") if p.is_file())
        base = [sys.executable, "-m", "vlmsearch.cli", "index", str(corpus), "--model",
                args.model, "--json", "--batch-size", str(args.batch_size), "--device",
                args.device]
        result: dict[str, object] = {
            "model": args.model, "images": n_files, "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
        }
        runs = {}
        if not args.skip_local:
            runs["local"] = [*base, "--index-dir", str(work / "local")]
        ray_cmd = [*base, "--index-dir", str(work / "ray"), "--engine", "ray",
                   "--ray-workers", str(args.ray_workers), "--gpus-per-worker",
                   str(args.gpus_per_worker)]
        if args.ray_address:
            ray_cmd += ["--ray-address", args.ray_address]
        runs["ray"] = ray_cmd
        for name, cmd in runs.items():
            report, wall = _run(cmd)
            seconds = float(report["seconds"])  # type: ignore[arg-type]
            result[name] = {"seconds": round(seconds, 2), "process_wall_s": round(wall, 2),
                            "images_per_s": round(n_files / seconds, 2),
                            "encoded": report["encoded"]}
        if "local" in result:
            local = result["local"]["images_per_s"]  # type: ignore[index]
            remote = result["ray"]["images_per_s"]  # type: ignore[index]
            result["ray_overhead"] = round(local / remote, 2)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
