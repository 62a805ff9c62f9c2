"""The library API end to end with the fake colour encoder: indexing, incremental updates,
search, image→text, removal, errors."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.imagegen import make_image
from vlmsearch import (
    Engine,
    ImageError,
    IndexNotFoundError,
    ModelMismatchError,
    Progress,
    Settings,
    UsageError,
)


def _open(tmp_path: Path, **kwargs: object) -> Engine:
    return Engine.open(tmp_path / "index", model="fake", **kwargs)  # type: ignore[arg-type]


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_index_and_search_ranks_the_right_image_first(tmp_path: Path, colour_tree: Path) -> None:
    events: list[Progress] = []
    with _open(tmp_path) as eng:
        report = eng.index([colour_tree], progress=events.append)
        assert (report.added, report.skipped, report.unchanged) == (6, 2, 0)
        assert report.encoded == 6
        assert {Path(p).name for p, _ in report.skipped_files} == {"broken.jpg", "notes.jpg"}
        for colour, name in [("red", "red.jpg"), ("blue", "blue sky.jpg"),
                             ("yellow", "ünïcode 黄色.webp"), ("purple", "purple.bmp")]:
            hits = eng.search(text=f"a {colour} picture", k=3)
            assert Path(hits[0].path).name == name, colour
            assert hits[0].rank == 1 and hits[0].score > hits[1].score
    last = [e for e in events if e.phase == "indexing"][-1]
    assert last.done == last.total == 8


def test_failed_files_are_recorded_with_reasons(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        failed = {Path(r.path).name: r.error for r in eng.failed()}
        assert set(failed) == {"broken.jpg", "notes.jpg"}
        assert "not an image" in (failed["notes.jpg"] or "")
        assert "truncated" in (failed["broken.jpg"] or "").lower()
        info = eng.info()
        assert (info.images, info.failed, info.texts) == (6, 2, 0)


def test_exif_rotation_is_applied(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        hit = next(h for h in eng.search(text="orange", k=10) if h.path.endswith("rotated.jpg"))
        assert (hit.width, hit.height) == (40, 80)  # stored 80x40 with orientation 6


def test_incremental_add_change_delete_rename_duplicate(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        again = eng.index([colour_tree])
        assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 6, 0)
        assert again.encoded == 0

        make_image(colour_tree / "new" / "pink.png", "pink")             # added
        make_image(colour_tree / "red.jpg", "black")                     # changed content
        _bump_mtime(colour_tree / "red.jpg")
        (colour_tree / "green.png").unlink()                             # deleted
        (colour_tree / "holiday" / "blue sky.jpg").rename(colour_tree / "moved.jpg")  # moved
        shutil.copy(colour_tree / "rotated.jpg", colour_tree / "copy of rotated.jpg")  # dup
        report = eng.index([colour_tree])
        assert report.added == 3       # pink, moved.jpg, copy of rotated.jpg
        assert report.updated == 1     # red.jpg
        assert report.removed == 2     # green.png, the old path of the moved file
        assert report.unchanged == 3   # yellow, purple, rotated
        assert report.encoded == 2     # pink and the new red.jpg; the move and the copy reused
        assert report.reused == 2
        top = eng.search(text="black", k=1)[0]
        assert top.path.endswith("red.jpg")
        paths = {Path(h.path).name for h in eng.search(text="blue", k=20)}
        assert "moved.jpg" in paths and "blue sky.jpg" not in paths and "green.png" not in paths
        assert eng.info().images == 7


def test_duplicates_in_one_batch_are_encoded_once(tmp_path: Path) -> None:
    root = tmp_path / "p"
    make_image(root / "a.png", "red")
    shutil.copy(root / "a.png", root / "b.png")
    shutil.copy(root / "a.png", root / "c.png")
    with _open(tmp_path) as eng:
        report = eng.index([root])
        assert (report.added, report.encoded, report.reused) == (3, 1, 2)


def test_touched_file_with_same_content_is_not_reencoded(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        _bump_mtime(colour_tree / "red.jpg")
        report = eng.index([colour_tree])
        assert (report.updated, report.encoded, report.reused) == (1, 0, 1)


def test_indexing_another_root_leaves_the_first_alone(tmp_path: Path, colour_tree: Path) -> None:
    other = tmp_path / "other"
    make_image(other / "x.png", "white")
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        report = eng.index([other])
        assert (report.added, report.removed) == (1, 0)
        assert eng.info().images == 7


def test_excluded_files_are_dropped_on_reindex(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        report = eng.index([colour_tree], exclude=["holiday"])
        assert report.removed == 2
        assert eng.info().images == 4


def test_image_query_excludes_itself_and_finds_similar(tmp_path: Path, colour_tree: Path) -> None:
    make_image(colour_tree / "red2.png", (200, 40, 40))
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        hits = eng.search(image=colour_tree / "red.jpg", k=3)
        assert all(not h.path.endswith("red.jpg") for h in hits)
        assert hits[0].path.endswith("red2.png")
        outside = make_image(tmp_path / "query.png", "red")
        assert eng.search(image=outside, k=1)[0].path.endswith(("red.jpg", "red2.png"))


def test_combined_and_negative_queries(tmp_path: Path) -> None:
    root = tmp_path / "p"
    make_image(root / "red.png", "red")
    make_image(root / "orange.png", "orange")
    make_image(root / "yellow.png", "yellow")
    with _open(tmp_path) as eng:
        eng.index([root])
        mixed = eng.search(text="yellow", image=root / "red.png", k=3)
        assert {Path(h.path).name for h in mixed[:2]} == {"orange.png", "yellow.png"}
        plain = {Path(h.path).name: h.score for h in eng.search(text="orange yellow", k=3)}
        pushed = eng.search(text="orange yellow", negative=["orange"], k=3)
        assert pushed[0].path.endswith("yellow.png")
        pushed_scores = {Path(h.path).name: h.score for h in pushed}
        assert pushed_scores["orange.png"] < plain["orange.png"] - 0.2


def test_image_to_text(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        report = eng.add_texts(["a red square", "a blue sky", "green grass", "a red square", " "])
        assert (report.added, report.existing) == (3, 0)  # repeats collapse, blanks are dropped
        again = eng.add_texts(["a blue sky", "a new one"])
        assert (again.added, again.existing) == (1, 1)
        hits = eng.search(image=colour_tree / "holiday" / "blue sky.jpg", target="texts", k=2)
        assert hits[0].text == "a blue sky"
        # an indexed query image excludes itself from image results only, never a text
        all_texts = eng.search(image=colour_tree / "red.jpg", target="texts", k=10)
        assert len(all_texts) == 4
        assert eng.info().texts == 4
        assert eng.clear_texts() == 4
        assert eng.search(image=colour_tree / "red.jpg", target="texts") == []


def test_remove_files_and_folders(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        assert eng.remove([colour_tree / "holiday"]) == 2
        assert eng.remove([colour_tree / "red.jpg", colour_tree / "nothing-here.jpg"]) == 1
        names = {Path(h.path).name for h in eng.search(text="x", k=50)}
        assert "red.jpg" not in names and "blue sky.jpg" not in names
        assert eng.info().images == 3


def test_index_found_again_from_another_process_view(tmp_path: Path, colour_tree: Path) -> None:
    with Engine.open(name="mine", model="fake") as eng:
        eng.index([colour_tree])
    with Engine.open(name="mine", create=False) as eng:  # no --model: the index's own
        assert eng.search(text="green", k=1)[0].path.endswith("green.png")
        assert eng.info().path == str(Path(os.environ["VLMSEARCH_HOME"]) / "mine")


def test_user_errors_are_vlmsearch_errors(tmp_path: Path, colour_tree: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="vlmsearch index"):
        Engine.open(tmp_path / "nothing", create=False)
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        with pytest.raises(UsageError):
            eng.search()
        with pytest.raises(UsageError):
            eng.search(text="   ")
        with pytest.raises(ImageError, match="not an image"):
            eng.search(image=colour_tree / "notes.jpg")
        with pytest.raises(ImageError, match="cannot read"):
            eng.search(image=tmp_path / "missing.png")
    with pytest.raises(ModelMismatchError, match="--reindex"):
        Engine.open(tmp_path / "index", model="fake:48")


def test_reindex_switches_model(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
    with Engine.open(tmp_path / "index", model="fake:48", reindex=True) as eng:
        assert eng.info().images == 0 and eng.info().dim == 48
        report = eng.index([colour_tree])
        assert report.added == 6 and report.encoded == 6
        assert eng.search(text="red", k=1)[0].path.endswith("red.jpg")


def test_vectors_match_store_after_many_updates(tmp_path: Path, colour_tree: Path) -> None:
    """The derived FAISS file always equals the store (every file one vector, no orphans)."""
    with _open(tmp_path, settings=Settings(checkpoint_images=2)) as eng:
        eng.index([colour_tree])
        for i in range(3):
            make_image(colour_tree / f"extra{i}.png", (i * 60, 100, 200 - i * 50))
            eng.index([colour_tree])
            if i == 1:
                eng.remove([colour_tree / "extra1.png"])
                (colour_tree / "extra1.png").unlink()
    with _open(tmp_path) as eng, eng._handle.store.read() as conn:
        index, _ = eng._handle.vectors.current("image", conn, writable=True, reload=True)
        live = np.sort(eng._handle.store.live_ids("image", conn))
        np.testing.assert_array_equal(np.sort(index.ids()), live)
        assert len(live) == 8


def test_stale_or_missing_faiss_file_is_repaired(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as eng:
        eng.index([colour_tree])
        faiss_file = eng._handle.layout.vector_path(
            "image", eng._handle.manifest.vectors["image"].file)
    faiss_file.unlink()
    with _open(tmp_path) as eng:
        assert eng.search(text="red", k=1)[0].path.endswith("red.jpg")
    faiss_file.write_bytes(b"garbage")
    with _open(tmp_path) as eng:
        assert eng.search(text="red", k=1)[0].path.endswith("red.jpg")


def test_query_sees_changes_committed_by_another_engine(tmp_path: Path, colour_tree: Path) -> None:
    with _open(tmp_path) as writer, _open(tmp_path) as reader:
        writer.index([colour_tree])
        assert reader.search(text="red", k=1)[0].path.endswith("red.jpg")
        make_image(colour_tree / "new.png", "pink")
        time.sleep(0.01)
        writer.index([colour_tree])
        assert reader.search(text="pink", k=1)[0].path.endswith("new.png")


def test_large_collection_switches_to_approximate_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "many"
    for i in range(260):
        dark = (int(rng.integers(0, 90)), int(rng.integers(0, 200)), int(rng.integers(0, 200)))
        make_image(root / f"{i:03d}.png", dark, size=(24, 24))
    make_image(root / "target.png", "pink", size=(24, 24))
    settings = Settings(exact_search_limit=100)
    with _open(tmp_path, settings=settings) as eng:
        eng.index([root])
        info = eng.info()
        assert info.index_type.startswith("IVF") and info.images == 261
        assert eng.info().recall_at_10 is not None
    with _open(tmp_path, settings=settings) as eng:  # read-only, memory-mapped search
        assert eng.search(text="pink", k=1)[0].path.endswith("target.png")
        eng.remove([root / "target.png"])
        assert all(not h.path.endswith("target.png") for h in eng.search(text="pink", k=5))
        for p in sorted(root.iterdir())[:220]:
            p.unlink()
        eng.index([root])
        assert eng.info().index_type == "Flat"  # shrank below half the limit: exact again
