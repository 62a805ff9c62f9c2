"""The command line: parse arguments → :class:`~vlmsearch.engine.Engine` → render.

This is the only module that imports typer. Errors the user can fix (``VlmsearchError``) become
one line on stderr and a non-zero exit code, in one place (:func:`_run`). Heavy modules are
imported inside the commands so ``vlmsearch --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional, TypeVar

import typer

from .config import DEFAULT_MODEL
from .errors import VlmsearchError
from .models_catalog import SHIPPED_DEFAULT

app = typer.Typer(
    name="vlmsearch",
    help="Local-first semantic image search: index photo folders, search them by text or image.",
    epilog="First run:\n\n\b\n  vlmsearch index ~/Pictures\n  vlmsearch query \"a dog on a "
    f"beach\"\n\nWithout internet, index with --model {SHIPPED_DEFAULT}: it ships with "
    "vlmsearch and needs no download. Every command has --help.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    # Plain click help: at 80 columns Typer's rich panels left the help of `index` 16
    # characters wide (and read "[scale]" in a help text as markup and dropped it)
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

T = TypeVar("T")

EXIT_PARTIAL = 3
"""`index` could not reach a root (or a folder holding indexed files): everything else is up
to date, those entries are kept, and the exit code says the run was partial."""


def _wrap_at_spaces_only() -> None:
    """Help texts wrap at spaces only: click's wrapper also breaks after hyphens, which cut
    option and command names such as --gpus-per-worker or add-texts in two. (Typer may carry
    its own copy of click's formatting, so both are adjusted.)"""
    import importlib

    for name in ("typer._click._textwrap", "click._textwrap"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        base: Any = module.TextWrapper
        if getattr(base, "spaces_only", False):
            continue

        class SpacesOnly(base):
            spaces_only = True

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.update(break_on_hyphens=False, break_long_words=False)
                super().__init__(*args, **kwargs)

        setattr(module, "TextWrapper", SpacesOnly)  # noqa: B010


_wrap_at_spaces_only()

# --- shared options ------------------------------------------------------------------------------
IndexName = Annotated[
    Optional[str],
    typer.Option("--index", "-i", metavar="NAME", help="Which index of the index home "
                 "($VLMSEARCH_HOME or the user data folder); default: default.",
                 show_default=False),
]
IndexDir = Annotated[
    Optional[Path],
    typer.Option("--index-dir", metavar="DIR", help="Use the index in this folder (overrides "
                 "--index).", file_okay=False),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
IndexModel = Annotated[
    Optional[str],
    typer.Option("--model", "-m", metavar="SPEC",
                 help="The index's model (see `vlmsearch models`): the "
                 "index's own model changes nothing; another one is an error (switching models "
                 "is `index --reindex`).", show_default=False),
]
Device = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="Where the model runs: auto (cuda, "
                      "then mps, then cpu), cpu, cuda or mps.")
]


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also show the log lines of vlmsearch and of the libraries it "
        "uses (hidden by default: problems are reported as one error line).")] = False,
) -> None:
    """Local-first semantic image search: index photo folders, search them by text or image."""
    from .logsetup import configure

    configure(verbose)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(fn: Callable[[], T]) -> T:
    """Run a command body, turning user-fixable errors into a message and an exit code."""
    try:
        return fn()
    except VlmsearchError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished work is saved; run the same command again to continue",
                   err=True)
        raise typer.Exit(130) from None


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@contextmanager
def _stdout_kept_clean(enabled: bool) -> Iterator[None]:
    """Send everything written to file descriptor 1 to stderr for a while, so that with
    ``--json`` stdout holds only the JSON. Libraries that print from native code or background
    threads (Ray's raylet messages about a retried worker, for one) would otherwise break
    the output for scripts."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no real descriptors (an embedding host): nothing to protect
        yield
        return
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _settings(**overrides: Any) -> Any:
    from .config import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _shown(path: str) -> str:
    from .sources import display_path

    return display_path(path)


@contextmanager
def _progress_bar(enabled: bool, label: str) -> Iterator[Callable[[Any], None]]:
    """A rich progress bar on stderr when it is a terminal; a no-op callback otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda event: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(event: Any) -> None:
            description = {"scanning": "Scanning", "indexing": label, "saving": "Saving",
                           "reading text": "Reading text in pictures",
                           "metadata": "Reading photo metadata (no re-embedding)",
                           "exporting": "Preparing fast text queries (once per model)",
                           "exporting-images": "Preparing the image model for this CPU "
                           "(once per machine)"}
            bar.update(task, description=description.get(event.phase, event.phase),
                       completed=event.done, total=event.total)

        yield update


# --- index ---------------------------------------------------------------------------------------
@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH", help="Folders or files to index (recursively).", show_default=False)],
    index_name: IndexName = None,
    index_dir: IndexDir = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="SPEC", help=f"Model for a new index; an existing index keeps "
        f"its own. Default: {DEFAULT_MODEL} (downloaded once, about 600 MB). Without internet: "
        f"{SHIPPED_DEFAULT}, which ships with vlmsearch. `vlmsearch models` lists more.")
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", "-b", min=1, metavar="N", help="Images per model forward pass "
        "(default 32).", show_default=False)] = None,
    device: Device = "auto",
    exclude: Annotated[Optional[list[str]], typer.Option(
        "--exclude", "-x", metavar="GLOB", help="Skip files and folders matching GLOB "
        "(repeatable). Without '/' "
        "it matches names (e.g. '*.tmp', 'thumbnails'); with '/' paths relative to the root.")
    ] = None,
    include_hidden: Annotated[bool, typer.Option(
        "--include-hidden", help="Also index files and folders whose names start with '.'.")
    ] = False,
    ext: Annotated[Optional[list[str]], typer.Option(
        "--ext", metavar=".EXT", help="Also index files ending in .EXT (repeatable), e.g. "
        "--ext .jfi for images Pillow can read under a name it does not list.")] = None,
    only_ext: Annotated[Optional[list[str]], typer.Option(
        "--only-ext", metavar=".EXT", help="Index only files ending in .EXT (repeatable) "
        "instead of every supported format (the README lists them); indexed files of other "
        "types are left as they are.")] = None,
    follow_symlinks: Annotated[bool, typer.Option(
        "--follow-symlinks/--no-follow-symlinks",
        help="Follow symbolic links to files and folders, even outside the root (loops are "
        "detected).")] = True,
    max_pixels: Annotated[Optional[int], typer.Option(
        "--max-pixels", min=1, metavar="N", help="Skip images declaring more than N pixels, "
        "a decompression-bomb guard (default 100000000).", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=0, metavar="N", help="Parallel image decoders (default 0: one per "
        "CPU core).", show_default=False)] = None,
    checkpoint: Annotated[Optional[int], typer.Option(
        "--checkpoint", min=1, metavar="N", help="Commit work at least every N images and "
        "every 60 s: at most this much is redone after a crash (default 500).",
        show_default=False)] = None,
    reindex: Annotated[bool, typer.Option(
        "--reindex", help="Forget all vectors and re-embed every file (needed to switch an "
        "existing index to another --model).")] = False,
    engine: Annotated[str, typer.Option(
        "--engine", metavar="local|ray",
        help="local: this process (decoder threads + one model). ray: decode and "
        "embed on a Ray cluster (pip install 'vlmsearch[scale]'; see docs/scale.md).")
    ] = "local",
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", metavar="ADDR",
        help="With --engine ray: auto (the cluster this machine belongs to), "
        "HOST:PORT of a head node, or ray://HOST:10001 (Ray Client). Default: a private Ray "
        "instance on this machine.")] = None,
    ray_workers: Annotated[int, typer.Option(
        "--ray-workers", min=0, metavar="N",
        help="With --engine ray: encoder actors (0 = one per GPU with "
        "--gpus-per-worker, else one per 2 cluster CPUs).")] = 0,
    gpus_per_worker: Annotated[float, typer.Option(
        "--gpus-per-worker", min=0, metavar="N",
        help="With --engine ray: GPUs per encoder actor (0 = CPU "
        "actors; >0 also moves decoding to separate CPU tasks).")] = 0.0,
    ocr: Annotated[Optional[bool], typer.Option(
        "--ocr/--no-ocr", help="Read the text in pictures (signs, screenshots, receipts; "
        "English and Chinese) so queries find it. Remembered by the index; off by default, "
        "as it costs time on every new picture (the README has the figures).",
        show_default=False)] = None,
    db: Annotated[Optional[str], typer.Option(
        "--db", metavar="URL",
        help="For a new index: keep its metadata in this database instead of the "
        "folder's SQLite file, e.g. postgresql+psycopg://USER@HOST:5432/DBNAME (password from "
        "PGPASSWORD or ~/.pgpass). Recorded in the index folder, so later commands need no "
        "--db.")] = None,
    json_out: JsonOut = False,
) -> None:
    """Index the images under PATHs, or bring an index up to date.

    New and changed files are embedded; unchanged ones are not read again; deleted ones are
    dropped. A model whose weights are not on this machine yet is downloaded first, after
    saying how big it is.
    """

    options = dict(locals())

    def body() -> int:
        _fetch_model_first(model, index_name, index_dir, json_out)  # before heavy imports
        job = _IndexJob(options)
        with job.open() as eng:
            with _progress_bar(True, "Indexing") as progress, _stdout_kept_clean(json_out):
                report = eng.index(paths, progress=progress, **job.run_options)
            if json_out:
                data = report.to_dict()
                data["index"] = str(eng.path)
                _print_json(data)
            else:
                _render_index_report(report, eng.path)
        return 0 if report.complete else EXIT_PARTIAL

    code = _run(body)
    if code:
        raise typer.Exit(code)


class _IndexJob:
    """What the options of `index` (which `watch` shares) ask for: how to open the index
    and the keyword arguments of each index run."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def open(self) -> Any:
        from .engine import Engine

        o = self.options
        settings = _settings(batch_size=o["batch_size"], device=o["device"],
                             max_pixels=o["max_pixels"], decode_workers=o["workers"],
                             follow_symlinks=o["follow_symlinks"],
                             checkpoint_images=o["checkpoint"])
        return Engine.open(o["index_dir"], name=o["index_name"], model=o["model"],
                           settings=settings, reindex=o["reindex"], db=o["db"])

    @property
    def run_options(self) -> dict[str, Any]:
        o = self.options
        ray_options = None
        if o["engine"] == "ray" or o["ray_address"] is not None or o["ray_workers"] or \
                o["gpus_per_worker"]:
            from .distributed.options import RayOptions

            ray_options = RayOptions(address=o["ray_address"], workers=o["ray_workers"],
                                     gpus_per_worker=o["gpus_per_worker"])
        return {"exclude": o["exclude"] or (), "include_hidden": o["include_hidden"],
                "engine": o["engine"], "ray": ray_options, "ocr": o["ocr"],
                "add_extensions": o["ext"] or (), "only_extensions": o["only_ext"]}


def _render_index_report(report: Any, index_path: Path) -> None:
    typer.echo(
        f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.removed} removed, {report.skipped} skipped in {report.seconds:.1f}s "
        f"({report.encoded} encoded, {report.reused} reused by content)"
    )
    if report.ocr_read:
        typer.echo(f"read text in {report.ocr_read} pictures ({report.ocr_with_text} with text"
                   f", {report.ocr_failed} could not be read)")
    if report.metadata_read:
        typer.echo(f"read the photo metadata (date, camera, place) of {report.metadata_read} "
                   f"indexed files from their headers in {report.metadata_seconds:.1f}s; "
                   "nothing was re-embedded")
    for path, reason in report.skipped_files[:10]:
        typer.echo(f"  skipped {_shown(path)}: {reason}", err=True)
    if len(report.skipped_files) > 10:
        typer.echo(f"  ... and {len(report.skipped_files) - 10} more "
                   "(`vlmsearch info --failed` lists them all)", err=True)
    for path, reason in report.walk_problems[:10]:
        typer.echo(f"  could not walk {_shown(path)}: {reason}", err=True)
    for path, reason in report.unavailable_places[:10]:
        typer.echo(f"  could not reach {_shown(path)}: {reason}", err=True)
    if report.unavailable:
        typer.echo(f"  {report.unavailable} indexed files there were kept as they were; run "
                   "the same command again once they can be reached (`vlmsearch info "
                   "--unavailable` lists them)", err=True)
    typer.echo(f"index: {index_path}")


# --- watch ---------------------------------------------------------------------------------------
def watch(**options: Any) -> None:
    """Index PATHs, then keep the index in step as files change.

    Takes the options of `index`. After an ordinary index run, file system events (or, with
    --poll, periodic scans) are applied as small index runs: new and changed files once they
    stop changing (--settle), deleted and renamed ones too (a renamed file keeps its vector).
    Other commands (query, info, serve) can use the index meanwhile. One line per round
    (with --json one JSON object per line); Ctrl-C or SIGTERM stops, keeping everything
    applied.
    """
    json_out = options["json_out"]

    def body() -> None:
        _fetch_model_first(options["model"], options["index_name"], options["index_dir"],
                           json_out)
        from .watch import WatchOptions

        watch_options = WatchOptions(poll=options["poll"], debounce=options["debounce"],
                                     settle=options["settle"]).checked()
        job = _IndexJob(options)
        show: list[Callable[[Any], None]] = [lambda event: None]  # the initial run's bar
        with job.open() as eng, _stop_on_sigterm():
            watcher = eng.watch(options["paths"], options=watch_options,
                                progress=lambda event: show[0](event), **job.run_options)
            rounds = watcher.rounds()
            try:
                with _progress_bar(True, "Indexing") as bar, _stdout_kept_clean(json_out):
                    show[0] = bar
                    done = next(rounds, None)
                show[0] = lambda event: None  # later rounds are small: one line each
                while done is not None:
                    if done.initial:
                        _say_watching(watcher, eng.path, json_out)
                    _render_round(done, json_out)
                    with _stdout_kept_clean(json_out):  # while index runs happen
                        done = next(rounds, None)
            except KeyboardInterrupt:
                typer.echo("stopped watching: every change applied so far is saved", err=True)

    _run(body)


def _say_watching(watcher: Any, index_path: Path, json_out: bool) -> None:
    if watcher.fallback_reason:
        typer.echo(f"warning: file system events are unavailable ({watcher.fallback_reason}); "
                   "scanning for changes instead", err=True)
    how = ("file system events" if watcher.mode == "events"
           else f"scans every {watcher.interval:g} s")
    typer.echo(f"watching {len(watcher.roots)} folder(s) for changes ({how}); index: "
               f"{index_path}; Ctrl-C stops", err=True)


def _render_round(done: Any, json_out: bool) -> None:
    data = done.to_dict()
    if json_out:
        sys.stdout.write(json.dumps(data) + "\n")  # one object per line, flushed at once
        sys.stdout.flush()
        return
    if done.initial:
        typer.echo(f"initial run: {data['added']} added, {data['updated']} updated, "
                   f"{data['removed']} removed, {data['skipped']} skipped in "
                   f"{data['seconds']:.1f}s")
        return
    typer.echo(f"round {data['round']}: {data['added']} added, {data['updated']} updated, "
               f"{data['removed']} removed, {data['skipped']} skipped ({data['events']} "
               f"events; {data['reused']} reused by content) in {data['seconds']:.1f}s, "
               f"{data['latency']:.1f}s after the first change")


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops like Ctrl-C does (finished work committed), not mid-write."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _command_with_options_of(base: Callable[..., Any], fn: Callable[..., Any],
                             extra: list[Any], replace: dict[str, Any]) -> Callable[..., Any]:
    """``fn`` (taking ``**options``) as a command with every option of ``base`` (so `watch`
    has the options of `index` without a copy of them), ``replace``-d parameters swapped
    and ``extra`` parameters added before ``--json``."""
    import inspect

    params = [replace.get(p.name, p) for p in
              inspect.signature(base, eval_str=True).parameters.values()]
    params = params[:-1] + extra + params[-1:]
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return fn


def _watch_parameters() -> tuple[list[Any], dict[str, Any]]:
    import inspect

    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    extra = [
        inspect.Parameter("poll", keyword, default=None, annotation=Annotated[
            Optional[float], typer.Option(
                "--poll", min=0.01, metavar="SECONDS", help="Scan for changes every SECONDS "
                "instead of listening to file system events (network mounts, where events "
                "do not arrive). Used anyway when events cannot be set up.",
                show_default=False)]),
        inspect.Parameter("settle", keyword, default=1.0, annotation=Annotated[
            float, typer.Option(
                "--settle", min=0, metavar="SECONDS", help="Read a new or changed file once "
                "its size and time stayed the same for SECONDS (files still being written "
                "are waited for).")]),
        inspect.Parameter("debounce", keyword, default=0.5, annotation=Annotated[
            float, typer.Option(
                "--debounce", min=0, metavar="SECONDS", help="Apply changes once no new "
                "event came for SECONDS (a big copy becomes one or a few rounds).")]),
    ]
    replace = {"paths": inspect.Parameter("paths", keyword, annotation=Annotated[
        list[Path], typer.Argument(metavar="PATH", help="Folders to index and watch "
                                   "(recursively).", show_default=False)])}
    return extra, replace


app.command()(_command_with_options_of(index, watch, *_watch_parameters()))


# --- query ---------------------------------------------------------------------------------------
@app.command()
def query(
    text: Annotated[Optional[str], typer.Argument(metavar="TEXT",
                                                  help="What to look for, in words.")] = None,
    image: Annotated[Optional[Path], typer.Option(
        "--image", metavar="FILE", help="Find images like this one (combine with TEXT for both).",
        dir_okay=False)] = None,
    negative: Annotated[Optional[list[str]], typer.Option(
        "--not", metavar="TEXT", help="Push results away from this concept (repeatable).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, metavar="K",
                                       help="Number of results.")] = 10,
    target: Annotated[str, typer.Option(
        "--target", metavar="images|texts", help="What to return: images, or the texts "
        "added with add-texts.")
    ] = "images",
    index_name: IndexName = None,
    index_dir: IndexDir = None,
    model: IndexModel = None,
    device: Device = "auto",
    json_out: JsonOut = False,
    paths_only: Annotated[bool, typer.Option(
        "--paths-only", help="Print only the paths, one per line (for piping).")] = False,
    after: Annotated[Optional[str], typer.Option(
        "--after", metavar="DATE",
        help="Taken on or after this day, month or year (2023-07-14, 2023-07, "
        "2023).", rich_help_panel="Filters")] = None,
    before: Annotated[Optional[str], typer.Option(
        "--before", metavar="DATE",
        help="Taken on or before this day, month or year (both ends are "
        "inclusive).", rich_help_panel="Filters")] = None,
    folders: Annotated[Optional[list[Path]], typer.Option(
        "--in", metavar="FOLDER",
        help="Only files under this folder (repeatable).", file_okay=False,
        rich_help_panel="Filters")] = None,
    camera: Annotated[Optional[str], typer.Option(
        "--camera", metavar="TEXT",
        help="Camera make or model contains this, any case (fuji, 'EOS R5').",
        rich_help_panel="Filters")] = None,
    place: Annotated[Optional[str], typer.Option(
        "--place", metavar="NAME",
        help="Taken in this city, region or country, any case, accents ignored "
        "(Paris, Lisboa, 'Paris, France').", rich_help_panel="Filters")] = None,
    near: Annotated[Optional[str], typer.Option(
        "--near", metavar="LAT,LON[,KM]",
        help="Taken within KM (default 10) of a position: LAT,LON[,KM].",
        rich_help_panel="Filters")] = None,
    types: Annotated[Optional[list[str]], typer.Option(
        "--type", metavar="EXT",
        help="Only files with this extension (repeatable; jpg also means jpeg).",
        rich_help_panel="Filters")] = None,
    sort: Annotated[Optional[str], typer.Option(
        "--sort", metavar="ORDER",
        help="score (default with TEXT or --image), date (oldest first; default "
        "for a filter alone) or -date.", rich_help_panel="Filters")] = None,
    min_score: Annotated[Optional[float], typer.Option(
        "--min-score", metavar="SCORE",
        help="Drop results scoring below this cosine similarity.",
        rich_help_panel="Filters")] = None,
    match: Annotated[str, typer.Option(
        "--match", metavar="MODE",
        help="both: also find pictures whose file name, or text read by `--ocr` indexing, "
        "contains every word of TEXT, ranked with the rest; semantic: the embedding only; "
        "text: the words only.")] = "both",
) -> None:
    """Search the index by TEXT, by --image, or both.

    Filters (--after, --place, --camera, ...) narrow it down; a filter alone lists its matches
    by date. The score is the cosine similarity between the query and each result (higher is
    closer).
    """

    def body() -> None:
        if text is not None and image is None and not os.environ.get("VLMSEARCH_NO_FAST_TEXT"):
            from .config import index_dir_for
            from .encoders.onnx_text import preload_for_index

            preload_for_index(index_dir_for(index_name, index_dir))  # overlaps the imports
        from .engine import Engine
        from .search.filters import Filter

        where = Filter(after=after, before=before, folders=folders or (), camera=camera,
                       place=place, near=near, types=types or ())
        with Engine.open(index_dir, name=index_name, model=model,
                         settings=_settings(device=device), create=False) as eng:
            hits = eng.search(text=text, image=image, negative=negative or (), k=top_k,
                              target=target, where=where, sort=sort,  # type: ignore[arg-type]
                              min_score=min_score, match=match)
        for warning in hits.warnings:
            typer.echo(f"note: {warning}", err=True)
        if json_out:
            _print_json([h.to_dict() for h in hits])
        elif paths_only:
            for h in hits:
                typer.echo(h.text if target == "texts" else h.path)
        else:
            _render_hits(hits, target)

    _run(body)


def _render_hits(hits: list[Any], target: str) -> None:
    from rich.console import Console
    from rich.table import Table

    # Off a terminal (a pipe, a file, a script) rows are never wrapped: a path split across
    # lines would break every tool that reads the table line by line.
    console = Console() if sys.stdout.isatty() else Console(width=1_000_000)
    if not hits:
        console.print("no results (is the index empty? `vlmsearch info` tells)")
        return
    table = Table(box=None, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    if target == "texts":
        table.add_column("text", overflow="fold")
        for h in hits:
            table.add_row(str(h.rank), f"{h.score:.3f}", h.text)
    else:
        table.add_column("path", overflow="fold")
        table.add_column("size", justify="right")
        dated = any(h.taken for h in hits)
        placed = any(h.place for h in hits)
        read = any(h.ocr for h in hits)
        if dated:
            table.add_column("taken")
        if placed:
            table.add_column("place", overflow="fold")
        if read:
            table.add_column("text in the picture", overflow="fold")
        for h in hits:
            size = f"{h.width}×{h.height}" if h.width else ""
            row = [str(h.rank), "" if h.score is None else f"{h.score:.3f}", _shown(h.path),
                   size]
            if dated:
                row.append((h.taken or "").replace("T", " ")[:16])
            if placed:
                row.append(h.place or "")
            if read:
                row.append(h.ocr or "")
            table.add_row(*row)
    console.print(table)


# --- add-texts -----------------------------------------------------------------------------------
@app.command("add-texts")
def add_texts(
    file: Annotated[Path, typer.Argument(metavar="FILE", dir_okay=False,
                                         help="Text file (one text per line) or TSV/CSV.")],
    column: Annotated[Optional[str], typer.Option(
        "--column", "-c", metavar="NAME|N", help="TSV/CSV column: header name or 1-based number "
        "(default: the last column).")] = None,
    delimiter: Annotated[Optional[str], typer.Option(
        "--delimiter", metavar="CHAR",
        help="Field separator (default: from the extension, .tsv or .csv).")
    ] = None,
    index_name: IndexName = None,
    index_dir: IndexDir = None,
    model: IndexModel = None,
    device: Device = "auto",
    json_out: JsonOut = False,
) -> None:
    """Add captions or labels to the index, for image→text search.

    Then `vlmsearch query --image PHOTO --target texts` finds the texts that fit a picture.
    """

    def body() -> None:
        from .corpus import read_texts
        from .engine import Engine

        texts = read_texts(file, column=column, delimiter=delimiter)
        with Engine.open(index_dir, name=index_name, model=model,
                         settings=_settings(device=device), create=False) as eng, \
                _progress_bar(True, "Embedding texts") as progress:
            report = eng.add_texts(texts, source=os.fspath(file), progress=progress)
        if json_out:
            _print_json(report.to_dict())
        else:
            typer.echo(f"{report.added} texts added, {report.existing} already present "
                       f"({report.seconds:.1f}s)")

    _run(body)


# --- info ----------------------------------------------------------------------------------------
@app.command()
def info(
    index_name: IndexName = None,
    index_dir: IndexDir = None,
    model: IndexModel = None,
    failed: Annotated[bool, typer.Option(
        "--failed", help="List the files that could not be indexed, with the reason.")] = False,
    unavailable: Annotated[bool, typer.Option(
        "--unavailable", help="List the indexed files kept while the place holding them could "
        "not be reached (an unplugged drive).")] = False,
    formats: Annotated[bool, typer.Option(
        "--formats", help="Count the indexed images by format (jpeg, png, heif, dng, ...).")
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Show what an index holds: counts, model, size and location.

    Also its embedding dimension and FAISS index type; --failed lists the files that could
    not be indexed.
    """

    def body() -> None:
        from .engine import Engine

        with Engine.open(index_dir, name=index_name, model=model, create=False) as eng:
            data = eng.info().to_dict()
            bad = eng.failed() if failed else []
            kept = eng.unavailable() if unavailable else []
        if formats and not (failed or unavailable):
            counts = data["formats"]
            if json_out:
                _print_json(counts)
            elif not counts:
                typer.echo("no indexed images")
            else:
                width = max(len(name) for name in counts)
                for name, n in counts.items():
                    typer.echo(f"{name.ljust(width)}  {n:,}")
            return
        if unavailable and not failed:
            if json_out:
                _print_json([{"path": _shown(r.path)} for r in kept])
            elif not kept:
                typer.echo("no unavailable files")
            else:
                for r in kept:
                    typer.echo(_shown(r.path))
            return
        if failed:
            rows = [{"path": _shown(r.path), "error": r.error} for r in bad]
            if json_out:
                _print_json(rows)
            elif not rows:
                typer.echo("no failed files")
            else:
                for row in rows:
                    typer.echo(f"{row['path']}\t{row['error']}")
            return
        if json_out:
            _print_json(data)
            return
        width = max(len(k) for k in data)
        for key, value in data.items():
            if key == "bytes":
                value = f"{value:,} ({value / 1e6:.1f} MB)"
            elif key == "formats":
                value = ", ".join(f"{name} {n:,}" for name, n in value.items()) or "-"
            typer.echo(f"{key.ljust(width)}  {value}")

    _run(body)


# --- remove --------------------------------------------------------------------------------------
@app.command()
def remove(
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH", help="Files or folders to drop from the index.", show_default=False)],
    index_name: IndexName = None,
    index_dir: IndexDir = None,
    json_out: JsonOut = False,
) -> None:
    """Drop files, or everything under folders, from the index.

    The files themselves are not touched.
    """

    def body() -> None:
        from .engine import Engine

        with Engine.open(index_dir, name=index_name, create=False) as eng:
            n = eng.remove(paths)
        if json_out:
            _print_json({"removed": n})
        else:
            typer.echo(f"{n} files removed from the index")

    _run(body)


# --- duplicates ----------------------------------------------------------------------------------
@app.command()
def duplicates(
    index_name: IndexName = None,
    index_dir: IndexDir = None,
    similar: Annotated[bool, typer.Option(
        "--similar", help="Also group similar pictures that are not the same picture (burst "
        "shots, mirrored copies).")] = False,
    min_score: Annotated[Optional[float], typer.Option(
        "--min-score", min=-1.0, max=1.0, metavar="S", help="Link near duplicates only when "
        "their vectors' cosine similarity is also at least S (the rule alone asks 0.58 plus "
        "0.01 per differing hash bit, at most 22 of 64); with --similar, S replaces the "
        "similar threshold (0.75).", show_default=False)] = None,
    json_out: JsonOut = False,
) -> None:
    """List groups of duplicate pictures in the index.

    exact: the same file content; near: the same picture resized, recompressed, cropped or
    rotated a little, re-exported or colour-tweaked; similar (with --similar): close shots.
    Each group has a score (1.0 for exact; else the cosine similarity of its weakest link).
    Found from what the index stores: no picture is read again.
    """

    def body() -> None:
        from .engine import Engine

        with Engine.open(index_dir, name=index_name, create=False) as eng:
            groups = eng.duplicates(similar=similar, min_score=min_score)
        if json_out:
            _print_json([g.to_dict() for g in groups])
            return
        for group in groups:
            typer.echo(f"{group.kind} ({group.score:.3f}), {len(group.members)} files:")
            for member in group.members:
                typer.echo(f"  {_shown(member.path)}")
        counts = {kind: sum(g.kind == kind for g in groups)
                  for kind in ("exact", "near", "similar")}
        files = sum(len(g.members) for g in groups)
        shown = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n or kind != "similar")
        typer.echo(f"{len(groups)} groups ({shown}) holding {files} files")

    _run(body)


# --- models --------------------------------------------------------------------------------------
@app.command()
def models(
    all_models: Annotated[bool, typer.Option(
        "--all", help="List every open_clip architecture with every pretrained tag (hundreds) "
        "instead of the recommended few.")] = False,
    download: Annotated[Optional[str], typer.Option(
        "--download", metavar="SPEC", help="Download the files model SPEC needs, with a "
        "progress bar, their size, where they land and their SHA-256.")] = None,
    to: Annotated[Optional[Path], typer.Option(
        "--to", metavar="DIR", file_okay=False, help="With --download: save the files in DIR "
        "instead of the Hugging Face cache, to copy them to a machine without internet.")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Models to choose from, or --download one.

    By default the models that ship with vlmsearch and a few recommended open_clip ones, each
    with its size, languages and whether it is on this machine; --all lists every open_clip
    model. --download SPEC fetches a model before use (or for a machine without internet,
    with --to DIR).
    """

    def body() -> None:
        from .errors import UsageError

        if to is not None and download is None:
            raise UsageError("--to needs --download SPEC")
        if download is not None:
            _download_model(download, to, json_out)
            return
        from .models_catalog import list_models, short_list

        entries = list_models() if all_models else short_list()
        if json_out:
            _print_json(entries)
        elif all_models:
            _render_all_models(entries)
        else:
            _render_short_list(entries)

    _run(body)


def _render_all_models(entries: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("spec", "kind", "dim", "available", "notes"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e["spec"], e["kind"], str(e.get("dim") or "?"),
                      "yes" if e["available"] else "no", e.get("notes", ""))
    Console().print(table)


def _render_short_list(entries: list[dict[str, Any]]) -> None:
    """Two lines per model, so that a long spec never wraps inside a table cell."""
    import shutil
    import textwrap

    from .downloads import human_size
    from .models_catalog import SPEED_SOURCE

    for e in entries:
        here = "here" if e["available"] else "not here"
        typer.echo(f"{e['spec']}  [{e.get('role') or e['kind']}; {here}]")
        size = e.get("download_bytes")
        facts = [f"{e.get('dim') or '?'}-d",
                 "no download" if size == 0 else (f"~{human_size(size)} download" if size
                                                  else "download size unknown"),
                 f"languages: {e.get('languages') or '?'}"]
        dev = e.get("dev_metrics") or {}
        per = dev.get("languages") or {}
        if len(per) > 1:
            facts.append("dev R@1 " + ", ".join(
                f"{lang} {m['text_to_image']['R@1']:.1f} / {m['image_to_text']['R@1']:.1f}"
                for lang, m in per.items()))
        elif dev.get("text_to_image"):
            facts.append(f"dev R@1 {dev['text_to_image']['R@1']:.1f} / "
                         f"{dev['image_to_text']['R@1']:.1f}")
        if e.get("speed"):
            facts.append(f"{e['speed']['images_per_s']:g} images/s")
        typer.echo(textwrap.fill(", ".join(facts), width=min(
            100, shutil.get_terminal_size((80, 24)).columns), initial_indent="  ",
            subsequent_indent="    ", break_long_words=False, break_on_hyphens=False))
    width = min(100, shutil.get_terminal_size((80, 24)).columns)
    notes = (
        "here: usable on this machine now. dev R@1: text→image / image→text recall@1 (%) on the "
        f"Flickr8k dev split. images/s: indexing speed ({SPEED_SOURCE}). "
        "`vlmsearch models --download SPEC` fetches a model; --all lists every open_clip model "
        "and tag.")
    typer.echo("\n" + textwrap.fill(notes, width=width, break_long_words=False,
                                    break_on_hyphens=False))


def _download_model(spec: str, to: Optional[Path], json_out: bool) -> None:
    from .downloads import human_size
    from .models_catalog import download_model, weights_cache_hint

    with _download_progress(True) as (on_file, progress):  # stderr: --json keeps stdout
        done = download_model(spec, to=to, on_file=on_file, progress=progress)
    use = spec
    if to is not None:
        weights = next((d for d in done if d.path.name.endswith((".safetensors", ".bin",
                                                                   ".pt", ".pth"))), None)
        if weights is not None and spec.startswith("openclip:") and len(done) == 1:
            use = f"{spec}@{weights.path.resolve()}"
    if json_out:
        _print_json({"spec": spec, "use": use, "files": [
            {"path": str(d.path), "bytes": d.size, "sha256": d.sha256, "verified": d.verified,
             "source": d.source, "already_here": d.already_here} for d in done]})
        return
    if not done:
        typer.echo(f"{spec} needs no download")
        return
    for d in done:
        state = "already here" if d.already_here and to is None else "saved"
        check = "matches the source's checksum" if d.verified else "computed here"
        typer.echo(f"{state}: {d.path}\n  size {human_size(d.size)} ({d.size:,} bytes)\n"
                   f"  sha256 {d.sha256} ({check})")
    if to is None:
        typer.echo(f"ready: --model {spec} works on this machine now, also offline "
                   f"(files in {weights_cache_hint()})")
    else:
        typer.echo(f"copy {to} to the machine without internet and use --model {use} "
                   "there (with the folder's path on that machine)")


@contextmanager
def _download_progress(enabled: bool) -> Iterator[tuple[Callable[..., None],
                                                        Callable[[int, Any], None]]]:
    """Say what is downloaded, from where and how big, then a byte progress bar on stderr
    (a terminal only)."""
    from .downloads import human_size

    def announce(file: Any, probed: Any) -> None:
        if not enabled:
            return
        size = human_size(probed.size) if probed.size else "size unknown"
        name = probed.name or file.label
        typer.echo(f"downloading {file.what} ({name}, {size}) from {file.host}", err=True)

    if not enabled or not sys.stderr.isatty():
        yield announce, lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task: list[Any] = []

        def start(file: Any, probed: Any) -> None:
            announce(file, probed)
            task[:] = [bar.add_task("download", total=probed.size)]

        def update(done: int, total: Any) -> None:
            if task:
                bar.update(task[0], completed=done, total=total)

        yield start, update


def _fetch_model_first(model: Optional[str], index_name: Optional[str],
                       index_dir: Optional[Path], json_out: bool) -> None:
    """Before an index run: a model whose files are not here yet is fetched now, after saying
    how big it is (and asking, on a terminal), never silently in the middle of indexing; a
    machine that cannot fetch it learns so in seconds."""
    from .config import index_dir_for
    from .downloads import fetch, human_size
    from .models_catalog import SHIPPED_DEFAULT, download_plan, spec_for_index, weights_cache_hint

    spec = spec_for_index(index_dir_for(index_name, index_dir), model)
    todo = download_plan(spec) if spec else None
    if not todo or not todo.files:
        return
    size = human_size(todo.total_bytes) if todo.total_bytes else "an unknown size"
    typer.echo(f"{spec} needs a one-time download of {size} into {weights_cache_hint()}",
               err=True)
    if not json_out and sys.stdin.isatty() and sys.stderr.isatty() and not typer.confirm(
            "Download it now?", default=True, err=True):
        _fail(f"nothing downloaded; `vlmsearch models --download {spec}` fetches it later, "
              f"and --model {SHIPPED_DEFAULT} needs no download", 1)
    with _download_progress(True) as (on_file, progress):
        for file, probed in todo.files:
            on_file(file, probed)
            fetch(file, probed, progress=progress)


# --- train ---------------------------------------------------------------------------------------
@app.command()
def train(
    pairs: Annotated[list[str], typer.Option(
        "--pairs", metavar="[LANG=]FILE", help="Image–caption pairs: TSV (image<TAB>caption), "
        "CSV or Karpathy JSON. Repeat with languages for several: --pairs en=captions.tsv "
        "--pairs zh=captions-zh.tsv (dev figures per language; the bundle declares them).",
        show_default=False)],
    images: Annotated[Path, typer.Option("--images", metavar="DIR", file_okay=False,
                                         help="Folder holding the images.", show_default=False)],
    train_list: Annotated[Path, typer.Option(
        "--train-list", metavar="FILE",
        help="Image names to train on, one per line.", dir_okay=False,
        show_default=False)],
    dev_list: Annotated[Path, typer.Option(
        "--dev-list", metavar="FILE", help="Held-out image names for early stopping, one per line.",
        dir_okay=False, show_default=False)],
    out: Annotated[Path, typer.Option("--out", metavar="DIR",
                                      help="New folder for the model bundle.",
                                      show_default=False)],
    name: Annotated[Optional[str], typer.Option(
        "--name", metavar="NAME", help="Bundle name (default: the --out folder's name).")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", metavar="FILE",
        help='JSON overriding the recipe: {"head": {...}, "training": {...}, '
        '"image_tower": {...}, "text_tower": {...}} (see docs/fusion-head.md).',
        dir_okay=False)] = None,
    epochs: Annotated[Optional[int], typer.Option(
        "--epochs", min=1, metavar="N", help="Override the recipe's number of epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", metavar="N", help="Override the recipe's random seed.")] = None,
    base: Annotated[Optional[str], typer.Option(
        "--base", metavar="BUNDLE", help="Keep BUNDLE's image side and text path and train "
        "only a second text path (by default multilingual-e5, for queries in non-Latin "
        "scripts) against its fixed image vectors; the recipe's text_tower, head and "
        "training sections then describe that path (docs/fusion-head.md, \"Locked image\").")
    ] = None,
    device: Device = "auto",
    json_out: JsonOut = False,
) -> None:
    """Train a fusion head on frozen towers into a model bundle.

    The bundle folder works as --model for index, query, add-texts and eval. Tower features
    are cached, so re-runs and other heads are cheap. With --base, a second text path is
    trained for an existing bundle instead.
    """

    def body() -> None:
        from .pairs import PairSource
        from .training.bundle_train import train_bundle
        from .training.recipe_file import read_recipe_file

        overrides = read_recipe_file(config) if config is not None else {}
        training = dict(overrides.get("training", {}))
        if epochs is not None:
            training["epochs"] = epochs
        if seed is not None:
            training["seed"] = seed
        with _training_progress(not json_out) as report:
            if base is not None:
                from .errors import UsageError
                from .training.text_path import train_text_path

                if "image_tower" in overrides:
                    raise UsageError("with --base the image side is the base bundle's; "
                                     "drop image_tower from --config")
                result = train_text_path(
                    base=base, pairs=[PairSource.parse(p) for p in pairs], images_dir=images,
                    train_list=train_list, dev_list=dev_list, out=out, name=name,
                    head=overrides.get("head"), training=training,
                    text_tower=overrides.get("text_tower"), path=overrides.get("text_path"),
                    device=device, report=report)
                result = {**result, "training": result["text_paths"][0]["training"]}
            else:
                if "text_path" in overrides:
                    from .errors import UsageError

                    raise UsageError("text_path in --config needs --base BUNDLE")
                result = train_bundle(
                    pairs=[PairSource.parse(p) for p in pairs], images_dir=images,
                    train_list=train_list, dev_list=dev_list,
                    out=out, name=name, head=overrides.get("head"), training=training,
                    image_tower=overrides.get("image_tower"),
                    text_tower=overrides.get("text_tower"), device=device, report=report)
        if json_out:
            _print_json({"bundle": str(out), "dev_metrics": result["dev_metrics"],
                         "training": result["training"]})
            return
        m = result["dev_metrics"]
        typer.echo(f"bundle written to {out} (use --model {out})")
        typer.echo(f"dev (best epoch {m['epoch']}): text→image R@1/5/10 "
                   f"{_recalls(m['text_to_image'])}, image→text R@1/5/10 "
                   f"{_recalls(m['image_to_text'])}"
                   + (" (mean over languages)" if len(m.get("languages", {})) > 1 else ""))
        if len(m.get("languages", {})) > 1:
            for lang, lm in m["languages"].items():
                typer.echo(f"  {lang}: text→image R@1/5/10 {_recalls(lm['text_to_image'])}, "
                           f"image→text R@1/5/10 {_recalls(lm['image_to_text'])}")

    _run(body)


def _recalls(m: dict[str, float]) -> str:
    return "/".join(f"{m[k]:.1f}" for k in ("R@1", "R@5", "R@10"))


@contextmanager
def _training_progress(enabled: bool) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Feature extraction and epochs on a rich progress bar (stderr terminals only)."""
    if not enabled or not sys.stderr.isatty():
        yield lambda kind, data: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), console=console) as bar:
        tasks: dict[str, Any] = {}

        def report(kind: str, data: dict[str, Any]) -> None:
            if kind == "features":
                what = data["what"]
                if what not in tasks:
                    tasks[what] = bar.add_task(what, total=data["total"], info="")
                bar.update(tasks[what], completed=data["done"])
            elif kind == "epoch":
                if "epochs" not in tasks:
                    tasks["epochs"] = bar.add_task("training", total=None, info="")
                info = (f"epoch {data['epoch']} loss {data['loss']:.3f} dev R@1 "
                        f"t→i {data['text_to_image']['R@1']:.1f} "
                        f"i→t {data['image_to_text']['R@1']:.1f}")
                bar.update(tasks["epochs"], completed=data["epoch"], info=info)

        yield report


# --- eval ----------------------------------------------------------------------------------------
@app.command("eval")
def evaluate_cmd(
    pairs: Annotated[list[str], typer.Option(
        "--pairs", metavar="[LANG=]FILE", help="Image–caption pairs file; repeat with "
        "languages (--pairs en=a.tsv --pairs zh=b.tsv) for figures per language.",
        show_default=False)],
    images: Annotated[Path, typer.Option("--images", metavar="DIR", file_okay=False,
                                         help="Folder holding the images.", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", metavar="SPEC",
                                       help="Model to evaluate.", show_default=False)],
    list_file: Annotated[Optional[Path], typer.Option(
        "--list", metavar="FILE",
        help="Evaluate on these images only (one name per line), e.g. a test "
        "split; default: every image in the pairs file.", dir_okay=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, metavar="N",
                                            help="Images per forward pass.")] = 64,
    device: Device = "auto",
    json_out: JsonOut = False,
) -> None:
    """Measure a model: image–caption retrieval recall (R@1/5/10).

    Both directions, with median ranks, through the same decode and encode path as indexing.
    """

    def body() -> None:
        from .encoders.registry import load_encoder
        from .evaluation import evaluate
        from .pairs import PairSource, build_pair_sources

        split = build_pair_sources([PairSource.parse(p) for p in pairs], images, list_file)
        encoder = load_encoder(model, device=device)
        with _progress_bar(not json_out, "Embedding") as bar:
            metrics = evaluate(encoder, split, batch_size=batch_size,
                               progress=lambda what, d, t: bar(_Event(what, d, t)))
        if json_out:
            _print_json(metrics)
            return
        typer.echo(f"{model}: {metrics['images']} images, {metrics['texts']} captions")
        per = metrics.get("languages", {})
        parts = ([(f"{lang} ", m) for lang, m in per.items()] if len(per) > 1 else
                 [(f"{next(iter(per))} " if per else "", metrics)])
        for prefix, part in parts:
            for key, label in (("text_to_image", "text→image"), ("image_to_text", "image→text")):
                m = part[key]
                typer.echo(f"  {prefix}{label}: R@1 {m['R@1']:.1f}  R@5 {m['R@5']:.1f}  "
                           f"R@10 {m['R@10']:.1f}  median rank {m['median_rank']:g}")

    _run(body)


class _Event:
    def __init__(self, phase: str, done: int, total: int) -> None:
        self.phase, self.done, self.total = phase, done, total


# --- serve ---------------------------------------------------------------------------------------
@app.command()
def serve(
    index_name: IndexName = None,
    index_dir: IndexDir = None,
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDR",
        help="Address to listen on. The default is only reachable from this machine; "
        "0.0.0.0 lets others on your network search and view the indexed pictures.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, metavar="N",
                                      help="Port to listen on (0: any free port).")] = 8000,
    allow_indexing: Annotated[bool, typer.Option(
        "--allow-indexing", help="Add POST /api/index, which indexes paths on this machine "
        "(off by default: the server is read-only).")] = False,
    model: IndexModel = None,
    device: Device = "auto",
    watch_paths: Annotated[Optional[list[Path]], typer.Option(
        "--watch", metavar="PATH", help="Also keep the index up to date with the folder "
        "PATH while serving, as `vlmsearch watch PATH` does (repeatable); results follow.",
        show_default=False)] = None,
    poll: Annotated[Optional[float], typer.Option(
        "--poll", min=0.01, metavar="SECONDS", help="With --watch: scan for changes every "
        "SECONDS instead of listening to file system events.", show_default=False)] = None,
) -> None:
    """Serve a search page and a JSON API for an index.

    At http://127.0.0.1:8000/ by default.

    The page searches by words, by a dropped or picked image, or both, and finds more like any
    result. The API is described at /openapi.json. Stop with Ctrl-C.
    """

    def body() -> None:
        from .engine import Engine

        try:
            from .web.server import is_loopback, run_server
        except ImportError as exc:
            raise VlmsearchError(
                f"`vlmsearch serve` needs FastAPI and uvicorn ({exc.name} is missing); install "
                "them with: pip install 'vlmsearch[web]'"
            ) from exc
        with Engine.open(index_dir, name=index_name, model=model,
                         settings=_settings(device=device), create=False) as eng:
            eng.warm_up()  # load the model now, not on the first query
            info = eng.info()

            def ready(url: str) -> None:
                typer.echo(f"serving {info.images} images from {eng.path} ({info.model})")
                if not is_loopback(host):
                    typer.echo("warning: listening beyond this machine; anyone who can reach "
                               "it can search and view the indexed pictures", err=True)
                typer.echo(f"open {url}  (API: {url}openapi.json; Ctrl-C stops)")

            background = _background_watch(eng, watch_paths, poll, device)
            try:
                run_server(eng, host=host, port=port, allow_indexing=allow_indexing,
                           on_ready=ready)
            finally:
                if background is not None:
                    background.stop()

    _run(body)


def _background_watch(eng: Any, paths: Optional[list[Path]], poll: Optional[float],
                      device: str) -> Any:
    """`serve --watch`: a watcher thread on its own engine for the served index."""
    if not paths:
        return None
    from .engine import Engine
    from .watch import BackgroundWatch, WatchOptions

    def say(done: Any) -> None:
        data = done.to_dict()
        typer.echo(f"watch: round {data['round']}: {data['added']} added, {data['updated']} "
                   f"updated, {data['removed']} removed in {data['seconds']:.1f}s", err=True)

    def failed(exc: BaseException) -> None:
        typer.echo(f"error: watching stopped: {exc}", err=True)

    background = BackgroundWatch(
        lambda: Engine.open(eng.path, settings=_settings(device=device), create=False),
        [str(p) for p in paths], options=WatchOptions(poll=poll).checked(), on_round=say,
        on_error=failed)
    background.start()
    return background


def main() -> None:
    """Console-script entry point.

    Every command has closed its index and written its output when ``app()`` returns, so the
    process ends right there instead of tearing the interpreter down: freeing a loaded model
    and its ONNX session alone took a quarter of a second of every cold query."""
    code: Any = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe (`| head`): nothing left to say
            stream.flush()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
