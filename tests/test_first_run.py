"""A newcomer's first five minutes: offline in seconds with one line that points the way, no
library log lines, a short model list, downloads that say what they do, and help texts that
read well at 80 columns. Nothing here touches the real network: a closed local port, a port
that never answers and a local stand-in hub (tests/fakehub.py) play the network's parts."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import MOBILENET, REPO, TINY_CLIP_CONFIG
from tests.fakehub import FakeHub, closed_port, silent_port
from vlmsearch import Engine, Progress, logsetup
from vlmsearch.cli import app
from vlmsearch.config import DEFAULT_MODEL
from vlmsearch.encoders.fake import FakeEncoder
from vlmsearch.errors import describe, shorten
from vlmsearch.models_catalog import RECOMMENDED, SHIPPED_DEFAULT

WEIGHTS = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/open_clip_model.safetensors"
LIBRARY_LOG = re.compile(r"^(WARNING|ERROR|INFO|DEBUG|CRITICAL)[: ]|^\S+\.py:\d+: \w*Warning|"
                         r"huggingface_hub|Retrying in|Traceback|^\d{4}-\d\d-\d\d .*\[[EW]:onnx",
                         re.MULTILINE)


def cli(*args: str | Path, env: dict[str, str], timeout: float = 300
        ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the real console entry point in a fresh process; returns it and its wall time."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vlmsearch.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    return proc, time.perf_counter() - start


@pytest.fixture
def online_env(tmp_path: Path, isolated_home: Path) -> dict[str, str]:
    """The environment of a machine that may use the network, with an empty model cache: no
    HF_HUB_OFFLINE (the test suite sets it everywhere else)."""
    env = dict(os.environ)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"):
        env.pop(name, None)
    env.update(HF_HOME=str(tmp_path / "hf"), VLMSEARCH_HOME=str(isolated_home),
               HOME=str(tmp_path / "home"))
    return env


def one_line_offline_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    (line,) = lines
    assert line.startswith("error: could not download the weights of " + DEFAULT_MODEL), line
    assert f"--model {SHIPPED_DEFAULT}" in line
    assert f"vlmsearch models --download {DEFAULT_MODEL} --to DIR" in line
    assert f"--model {DEFAULT_MODEL}@/path/to/open_clip_model.safetensors" in line
    assert not LIBRARY_LOG.search(stderr), stderr
    return line


# --- offline in seconds -------------------------------------------------------------------------
def test_default_model_offline_fails_in_seconds_when_nothing_listens(
    online_env: dict[str, str], colour_tree: Path
) -> None:
    online_env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    proc, seconds = cli("index", colour_tree, env=online_env)
    assert proc.returncode == 1 and proc.stdout == ""
    line = one_line_offline_error(proc.stderr)
    assert "looks offline" in line and "Connection refused" in line
    assert seconds < 5, seconds


def test_default_model_offline_fails_in_seconds_when_nothing_answers(
    online_env: dict[str, str], colour_tree: Path
) -> None:
    """A network that swallows packets: the probe's deadline, not the hub client's minute of
    retries, decides."""
    with silent_port() as port:
        online_env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
        proc, seconds = cli("index", colour_tree, env=online_env)
    assert proc.returncode == 1
    line = one_line_offline_error(proc.stderr)
    assert "looks offline" in line and "within 3 s" in line
    assert seconds < 5, seconds


def test_hf_hub_offline_fails_at_once_without_a_request(
    online_env: dict[str, str], colour_tree: Path
) -> None:
    with FakeHub({WEIGHTS: b"x" * 100}) as hub:
        online_env.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="1")
        proc, seconds = cli("index", colour_tree, env=online_env)
    assert proc.returncode == 1
    assert "HF_HUB_OFFLINE is set" in one_line_offline_error(proc.stderr)
    assert hub.requests == []
    assert seconds < 5, seconds


def test_the_suggested_model_is_the_catalogs_shipped_one() -> None:
    from vlmsearch.encoders.bundle import shipped_bundles

    assert SHIPPED_DEFAULT in {b["spec"] for b in shipped_bundles()}
    cli_source = (REPO / "vlmsearch" / "cli.py").read_text(encoding="utf-8")
    assert SHIPPED_DEFAULT not in cli_source  # named once, in the catalog


# --- downloads ----------------------------------------------------------------------------------
def test_models_download_from_a_local_hub(online_env: dict[str, str], tmp_path: Path) -> None:
    data = os.urandom(300_000)
    with FakeHub({WEIGHTS: data}) as hub:
        online_env["HF_ENDPOINT"] = hub.url
        proc, _ = cli("models", "--download", DEFAULT_MODEL, "--json", env=online_env)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        (file,) = report["files"]
        path = Path(file["path"])
        assert path.is_relative_to(tmp_path / "hf" / "hub") and path.read_bytes() == data
        assert file["sha256"] == hashlib.sha256(data).hexdigest() and file["verified"]
        assert file["bytes"] == len(data) and not file["already_here"]
        assert "downloading the weights (open_clip_model.safetensors, 300 kB)" in proc.stderr
        assert report["use"] == DEFAULT_MODEL

        gets = sum(1 for method, _ in hub.requests if method == "GET")
        proc, _ = cli("models", "--download", DEFAULT_MODEL, env=online_env)  # again: cached
        assert proc.returncode == 0, proc.stderr
        assert "already here" in proc.stdout and hashlib.sha256(data).hexdigest() in proc.stdout
        assert sum(1 for method, _ in hub.requests if method == "GET") == gets

        carry = tmp_path / "usb"
        proc, _ = cli("models", "--download", DEFAULT_MODEL, "--to", carry, "--json",
                      env=online_env)
        assert proc.returncode == 0, proc.stderr
        copied = carry / "open_clip_model.safetensors"
        assert copied.read_bytes() == data
        assert json.loads(proc.stdout)["use"] == f"{DEFAULT_MODEL}@{copied}"


def test_a_damaged_download_is_deleted_and_reported(online_env: dict[str, str]) -> None:
    with FakeHub({WEIGHTS: b"the real bytes" * 100}, etags={WEIGHTS: "0" * 64}) as hub:
        online_env["HF_ENDPOINT"] = hub.url
        proc, _ = cli("models", "--download", DEFAULT_MODEL, env=online_env)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is damaged" in errors[0], proc.stderr
    assert "it was deleted, run the same command again" in errors[0]
    left = [p for p in (Path(online_env["HF_HOME"]) / "hub").rglob("*") if p.is_file()]
    assert not [p for p in left if p.stat().st_size > 1000], left  # no damaged bytes kept


def test_index_says_how_big_the_download_is_before_it_starts(
    online_env: dict[str, str], colour_tree: Path
) -> None:
    with FakeHub({WEIGHTS: os.urandom(2_000_000)}) as hub:
        online_env["HF_ENDPOINT"] = hub.url
        proc, _ = cli("index", colour_tree, env=online_env)
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == (f"{DEFAULT_MODEL} needs a one-time download of 2.0 MB into "
                        f"{Path(online_env['HF_HOME']) / 'hub'}"), proc.stderr
    assert lines[1].startswith("downloading the weights (open_clip_model.safetensors, 2.0 MB)")
    # the stand-in hub serves random bytes, which open_clip cannot load: one clear line
    assert proc.returncode == 1 and len(lines) == 3 and "could not load" in lines[2]
    assert "delete it and run again" in lines[2]


def test_unknown_specs_are_refused_before_any_download(online_env: dict[str, str]) -> None:
    with FakeHub({}) as hub:
        online_env["HF_ENDPOINT"] = hub.url
        proc, _ = cli("models", "--download", "openclip:ViT-B-32/no_such_tag", env=online_env)
    assert proc.returncode == 1 and "no pretrained tag 'no_such_tag'" in proc.stderr
    assert hub.requests == []


# --- quiet terminal -----------------------------------------------------------------------------
def test_a_real_command_prints_no_library_log_lines(
    online_env: dict[str, str], colour_tree: Path, tmp_path: Path
) -> None:
    """open_clip logs 'No pretrained weights loaded' on the root logger for random weights,
    and the fast-query export runs ONNX Runtime: none of it may reach the terminal; with
    --verbose it does."""
    config = tmp_path / "tiny-clip.json"
    config.write_bytes(TINY_CLIP_CONFIG.read_bytes())
    spec = f"openclip:{config}/random"
    proc, _ = cli("index", colour_tree, "--model", spec, env=online_env)
    assert proc.returncode == 0, proc.stderr
    assert not LIBRARY_LOG.search(proc.stderr) and "pretrained" not in proc.stderr, proc.stderr
    # what remains is ours: the two unreadable files of the tree, one line each
    assert [line.split(":")[0] for line in proc.stderr.splitlines()] == [
        f"  skipped {colour_tree / 'broken.jpg'}", f"  skipped {colour_tree / 'notes.jpg'}"]
    proc, _ = cli("-v", "index", colour_tree, "--index", "other", "--model", spec,
                  env=online_env)
    assert proc.returncode == 0, proc.stderr
    assert "No pretrained weights loaded" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not MOBILENET.is_file(), reason=f"needs {MOBILENET}")
def test_the_shipped_model_indexes_quietly_the_first_time(
    online_env: dict[str, str], colour_tree: Path
) -> None:
    """First run of the shipped bundle (ONNX Runtime exports its text side for fast queries):
    stderr holds only the indexer's own lines about the two unreadable files."""
    proc, _ = cli("index", colour_tree, "--model", SHIPPED_DEFAULT, env=online_env)
    assert proc.returncode == 0, proc.stderr
    assert not LIBRARY_LOG.search(proc.stderr), proc.stderr
    assert all(line.startswith("  skipped ") for line in proc.stderr.splitlines()), proc.stderr
    assert (Path(online_env["VLMSEARCH_HOME"]) / ".cache" / "text-onnx").is_dir()


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logsetup._verbose, logsetup._configured)
    hub = logging.getLogger("huggingface_hub")
    saved_hub = (list(hub.handlers), hub.level, hub.propagate)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logsetup._verbose, logsetup._configured = saved[2], saved[3]
    hub.handlers[:], hub.level, hub.propagate = saved_hub[0], saved_hub[1], saved_hub[2]
    logging.captureWarnings(False)


def test_quiet_logging_keeps_our_warnings_only(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = logging.getLogger("huggingface_hub")
    hub.addHandler(logging.StreamHandler())  # as huggingface_hub does at import
    logsetup.configure(verbose=False)
    logging.error("Failed to download weights for tag 'x'")  # open_clip's style
    hub.warning("Retrying in 1s [Retry 1/5].")
    logging.getLogger("vlmsearch.onnx").warning("could not export the text side")
    err = capsys.readouterr().err
    assert err == "warning: could not export the text side\n"
    logsetup.configure(verbose=True)
    hub.warning("Retrying in 1s [Retry 1/5].")
    assert capsys.readouterr().err == "WARNING huggingface_hub: Retrying in 1s [Retry 1/5].\n"


# --- the model list -----------------------------------------------------------------------------
runner = CliRunner()


def test_models_lists_a_few_by_default_and_everything_with_all() -> None:
    short = runner.invoke(app, ["models"], env={"COLUMNS": "80"})
    assert short.exit_code == 0, short.output
    lines = short.stdout.splitlines()
    assert len(lines) <= 24, short.stdout  # three shipped bundles, four recommended, notes
    assert max(len(line) for line in lines) <= 80
    for spec in [SHIPPED_DEFAULT, DEFAULT_MODEL, *(r.spec for r in RECOMMENDED)]:
        assert any(line.startswith(spec + "  [") for line in lines), spec
    shipped = next(i for i, line in enumerate(lines) if line.startswith(SHIPPED_DEFAULT + "  ["))
    facts = " ".join(lines[shipped + 1:shipped + 3])  # the facts line may wrap at 80 columns
    assert "dev R@1 en 27.3 / 34.4, zh 11.6 /" in facts and "no download" in facts
    assert "384-d" in facts  # the projected vector (2,048 values before issue 11)
    english = next(i for i, line in enumerate(lines)
                   if line.startswith("flickr8k-mobilenetv2-minilm  ["))
    assert "dev R@1 26.5 / 33.3" in lines[english + 1]
    assert "~605 MB download" in short.stdout and "multilingual" in short.stdout

    everything = runner.invoke(app, ["models", "--all"])
    assert everything.exit_code == 0
    assert len(everything.stdout.splitlines()) > 100
    assert "openclip:ViT-B-32/openai" in everything.stdout


def test_models_json_short_and_all() -> None:
    short = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert len(short) == 3 + len(RECOMMENDED)  # the three shipped bundles
    roles = {e["role"] for e in short}
    assert {"default", "small and fast", "best quality", "multilingual"} <= roles
    for entry in short:
        assert {"spec", "kind", "role", "dim", "download_bytes", "languages", "available",
                "speed", "dev_metrics"} <= set(entry)
    default = next(e for e in short if e["spec"] == DEFAULT_MODEL)
    assert default["dim"] == 512 and default["download_bytes"] > 500e6
    assert default["available"] is False  # the test home's empty cache
    full = json.loads(runner.invoke(app, ["models", "--all", "--json"]).stdout)
    assert len(full) > 100 and {"spec", "kind", "dim", "available"} <= set(full[0])


def test_the_catalog_agrees_with_open_clip() -> None:
    import open_clip

    for r in RECOMMENDED:
        arch, tag = r.spec.removeprefix("openclip:").rsplit("/", 1)
        assert open_clip.get_pretrained_cfg(arch, tag)["hf_hub"] == r.hub, r.spec
        config = open_clip.get_model_config(arch)
        assert config["embed_dim"] == r.dim, r.spec
        assert config["text_cfg"].get("hf_tokenizer_name") == r.text_tower_repo, r.spec


# --- help texts ---------------------------------------------------------------------------------
def broken_spans(text: str) -> list[str]:
    """Lines on which a `backquoted span` opens but does not close (it was wrapped), and
    lines ending in a word cut at a hyphen."""
    bad = [line for line in text.splitlines() if line.count("`") % 2]
    bad += [line for line in text.splitlines() if re.search(r"\w-$", line)]
    return bad


def test_broken_spans_finds_what_it_looks_for() -> None:
    assert broken_spans("fine `a b` here\nthen `query --image X --target\ntexts`.")
    assert broken_spans("what to return: images, or texts added with add-\ntexts")
    assert not broken_spans("fine `a b` here\nand `c`")


def test_every_help_text_reads_well_at_80_columns() -> None:
    names = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]
    for args in [[], *([name] for name in names)]:
        result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, args
        text = result.stdout
        assert not broken_spans(text), (args, broken_spans(text))
        long = [line for line in text.splitlines()
                if len(line) > 80 and not re.search(r"\S{40,}", line)]
        assert not long, (args, long)
        options = [line for line in text.splitlines() if line.lstrip().startswith("-")]
        assert not [line for line in options if "<" in line.split("  ")[1]], args  # metavars
        cut = [line for line in text.splitlines() if re.search(r"\w,?\.\.\.$", line)]
        assert not cut, (args, cut)  # a command's one-line help cut short


# --- messages are never cut inside a word -------------------------------------------------------
def test_shorten_cuts_at_a_word_boundary() -> None:
    text = ("An error happened while trying to locate the file on the Hub and we cannot find "
            "the requested files in the local cache. Please check your connection and try "
            "again or make sure your Internet connection is on.")
    short = shorten(text, 120)
    assert len(short) <= 120 and short.endswith("…")
    assert text.startswith(short[:-1]) and text[len(short) - 1] in " ,."  # a whole word ends
    assert shorten("short enough", 120) == "short enough"
    assert shorten("x" * 300, 50) == "x" * 49 + "…"  # one giant token: cut, but marked
    assert describe(ValueError("\n\nfirst line\nsecond")) == "first line"
    assert describe(ValueError()) == "ValueError"


# --- first-time work is a phase of its own ------------------------------------------------------
class PreparingEncoder(FakeEncoder):
    """A fake encoder with one-time work to announce, like a bundle's ONNX export."""

    def __init__(self) -> None:
        super().__init__("fake")
        self.prepared = 0

    def prepare(self, on_phase: Callable[[str], None], images: int | None = None) -> None:
        self.prepared += 1
        self.images = images
        on_phase("exporting-images")


def test_an_encoders_one_time_work_is_reported_before_the_first_batch(
    colour_tree: Path, tmp_path: Path
) -> None:
    encoder = PreparingEncoder()
    events: list[Progress] = []
    (tmp_path / "empty").mkdir()
    with Engine.open(tmp_path / "index", model=encoder) as eng:
        eng.index([tmp_path / "empty"], progress=events.append)  # nothing to encode
        assert encoder.prepared == 0 and "exporting-images" not in [e.phase for e in events]
        eng.index([colour_tree], progress=events.append)
    phases = [e.phase for e in events]
    assert phases.index("exporting-images") < phases.index("indexing", phases.index("saving"))
    assert phases.count("exporting-images") == 1 and encoder.prepared == 1
    assert events[phases.index("exporting-images")].total is None
    assert encoder.images == 8  # told how many files are to be read: all of the tree


@pytest.mark.slow
@pytest.mark.skipif(not MOBILENET.is_file(), reason=f"needs {MOBILENET}")
def test_the_shipped_models_first_run_names_its_one_time_phases(
    colour_tree: Path, tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlmsearch.encoders import bundle

    def phases_of(index: Path) -> list[str]:
        events: list[Progress] = []
        with Engine.open(tmp_path / index, model=SHIPPED_DEFAULT) as eng:
            eng.index([colour_tree], progress=events.append)
        return list(dict.fromkeys(e.phase for e in events))

    # a handful of photos: not worth exporting the image tower (torch does them)
    assert phases_of(Path("small")) == ["scanning", "indexing", "saving", "exporting"]
    assert not (isolated_home / ".cache" / "image-onnx").exists()
    # a job big enough to pay the export back (here: any job)
    monkeypatch.setattr(bundle, "EXPORT_MIN_IMAGES", 1)
    assert phases_of(Path("big")) == ["scanning", "exporting-images", "indexing", "saving"]
    assert phases_of(Path("again")) == ["scanning", "indexing", "saving"]  # cached now
