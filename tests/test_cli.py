"""The command line, through Typer's CliRunner and through the installed console script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.imagegen import make_image
from vlmsearch.cli import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_index_query_info_json(colour_tree: Path) -> None:
    code, out, _ = run("index", colour_tree, "--model", "fake", "--json")
    assert code == 0
    summary = json.loads(out)
    for key in ("added", "updated", "unchanged", "removed", "skipped"):
        assert isinstance(summary[key], int)
    assert (summary["added"], summary["skipped"]) == (6, 2)
    assert isinstance(summary["seconds"], float)

    code, out, _ = run("query", "red", "--json", "-k", "3")
    assert code == 0
    hits = json.loads(out)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"].endswith("red.jpg")
    assert set(hits[0]) >= {"rank", "score", "path", "id", "width", "height"}
    assert hits[0]["score"] >= hits[1]["score"]

    code, out, _ = run("info", "--json")
    info = json.loads(out)
    assert (info["images"], info["texts"], info["failed"]) == (6, 0, 2)
    assert info["model"] == "fake" and info["dim"] == 32 and info["bytes"] > 0
    assert {"index_type", "path"} <= set(info)

    code, out, _ = run("info", "--failed", "--json")
    assert {Path(r["path"]).name for r in json.loads(out)} == {"broken.jpg", "notes.jpg"}


def test_human_output_paths_only_and_reindex_counts(colour_tree: Path) -> None:
    code, out, _ = run("index", colour_tree, "--model", "fake")
    assert code == 0 and "6 added" in out and "2 skipped" in out
    code, out, _ = run("query", "green", "--paths-only", "-k", "2")
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("green.png")
    code, out, _ = run("query", "green")
    assert "green.png" in out and "score" in out

    (colour_tree / "red.jpg").unlink()
    make_image(colour_tree / "new.png", "pink")
    code, out, _ = run("index", colour_tree, "--json")
    s = json.loads(out)
    assert (s["added"], s["removed"], s["unchanged"]) == (1, 1, 5)


def test_image_query_and_image_to_text(colour_tree: Path, tmp_path: Path) -> None:
    run("index", colour_tree, "--model", "fake")
    captions = tmp_path / "captions.tsv"
    captions.write_text('image\tcaption\na.jpg\ta "red" thing\nb.jpg\tthe blue sea\n')
    code, out, _ = run("add-texts", captions, "--json")
    assert code == 0 and json.loads(out)["added"] == 2
    code, out, _ = run("query", "--image", colour_tree / "holiday" / "blue sky.jpg",
                       "--target", "texts", "--json")
    assert json.loads(out)[0]["text"] == "the blue sea"
    code, out, _ = run("query", "--image", colour_tree / "red.jpg", "--json")
    assert all(not h["path"].endswith("red.jpg") for h in json.loads(out))
    code, out, _ = run("query", "sky", "--image", colour_tree / "red.jpg", "--not", "green",
                       "--json")
    assert code == 0 and json.loads(out)


def test_remove_command(colour_tree: Path) -> None:
    run("index", colour_tree, "--model", "fake")
    code, out, _ = run("remove", colour_tree / "holiday", "--json")
    assert code == 0 and json.loads(out) == {"removed": 2}
    code, out, _ = run("info", "--json")
    assert json.loads(out)["images"] == 4


def test_named_and_explicit_index_locations(colour_tree: Path, tmp_path: Path) -> None:
    run("index", colour_tree, "--model", "fake", "--index", "trip")
    _code, out, _ = run("info", "--index", "trip", "--json")
    assert Path(json.loads(out)["path"]) == Path(os.environ["VLMSEARCH_HOME"]) / "trip"
    run("index", colour_tree, "--model", "fake", "--index-dir", tmp_path / "explicit")
    _, out, _ = run("info", "--index-dir", tmp_path / "explicit", "--json")
    assert json.loads(out)["images"] == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["query", "red"], "no index at"),
        (["info"], "vlmsearch index PATH"),
        (["index", "/definitely/not/here", "--model", "fake"], "no such file"),
        (["index", ".", "--model", "nonsense-model"], "unknown model"),
        (["index", ".", "--model", "openclip:ViT-B-32/no-such-tag"], "no pretrained tag"),
        (["index", ".", "--model", "openclip:ViT-B-32@/missing/ckpt.pt"], "does not exist"),
        (["index", ".", "--index", "bad/name", "--model", "fake"], "invalid index name"),
        (["index", ".", "--device", "tpu", "--model", "fake"], "unknown device"),
    ],
)
def test_user_mistakes_give_one_line_and_nonzero_exit(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code != 0
    assert message in err
    assert "Traceback" not in err + out


def test_query_errors_after_indexing(colour_tree: Path, tmp_path: Path) -> None:
    run("index", colour_tree, "--model", "fake")
    for args, message in [
        (["query"], "give a TEXT"),
        (["query", "   "], "empty"),
        (["query", "--image", colour_tree / "notes.jpg"], "not an image"),
        (["query", "red", "--target", "audio"], "unknown --target"),
        (["index", colour_tree, "--model", "fake:64"], "--reindex"),
        (["add-texts", tmp_path / "missing.txt"], "cannot read"),
    ]:
        code, out, err = run(*args)
        assert code != 0, args
        assert message in err, (args, err)
        assert "Traceback" not in err + out


def test_every_command_has_help_and_is_documented_in_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    names = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]
    assert len(names) >= 6
    for name in names:
        code, out, _ = run(name, "--help")
        assert code == 0 and len(out) > 100, name
        assert re.search(rf"vlmsearch {re.escape(name)}\b", readme), f"README lacks `{name}`"


def test_installed_console_script_end_to_end(colour_tree: Path, tmp_path: Path) -> None:
    exe = shutil.which("vlmsearch") or str(Path(sys.executable).parent / "vlmsearch")
    if not Path(exe).exists():
        pytest.skip("the vlmsearch console script is not installed (pip install -e .)")
    env = dict(os.environ)
    proc = subprocess.run([exe, "index", str(colour_tree), "--model", "fake", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["added"] == 6
    assert "Indexing" not in proc.stderr  # no progress bar when stderr is not a terminal
    proc = subprocess.run([exe, "query", "blue", "--paths-only", "-k", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("blue sky.jpg")
    proc = subprocess.run([sys.executable, str(REPO / "cli.py"), "query", "blue", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["path"].endswith("blue sky.jpg")


def test_help_does_not_import_torch() -> None:
    code = ("import sys; from vlmsearch.cli import app; from typer.testing import CliRunner;"
            "CliRunner().invoke(app, ['--help']); CliRunner().invoke(app, ['info', '--help']);"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_commands_on_an_index_accept_its_model_and_refuse_another(
    colour_tree: Path, tmp_path: Path
) -> None:
    run("index", colour_tree, "--model", "fake")
    texts = tmp_path / "t.txt"
    texts.write_text("a red square\n")
    for command in (["query", "red"], ["info"], ["add-texts", texts],
                    ["serve", "--port", "0"]):
        if command[0] != "serve":  # serve would run until stopped: only the refusal is tried
            code, out, err = run(*command, "--model", "fake")
            assert code == 0, (command, err)
        code, out, err = run(*command, "--model", "fake:48")
        assert code == 1, command
        assert "built with model 'fake'" in err and "--reindex" in err, (command, err)
        assert "No such option" not in err and "Traceback" not in err + out


def test_results_table_off_a_terminal_never_splits_a_path(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "and-deeper-still" / "photos"
    for colour in ("red", "green", "blue"):
        make_image(deep / f"a {colour} picture with a long file name.png", colour)
    env = dict(os.environ)
    subprocess.run([sys.executable, "-m", "vlmsearch.cli", "index", str(deep), "--model", "fake"],
                   check=True, capture_output=True, env=env)
    done = subprocess.run([sys.executable, "-m", "vlmsearch.cli", "query", "red"],
                          capture_output=True, text=True, env={**env, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "picture" in line]
    assert len(lines) == 3 and all(str(deep) in line for line in lines), done.stdout
