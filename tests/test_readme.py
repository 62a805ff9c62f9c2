"""The README's library example runs as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.imagegen import make_image

README = Path(__file__).resolve().parent.parent / "README.md"


def _library_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python example under '## Library'"
    return match.group(1)


def test_readme_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _library_example()
    for colour in ("red", "green", "blue"):
        make_image(tmp_path / "tests" / "data" / f"{colour}.png", colour)
    (tmp_path / "tests" / "data" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    code = code.replace("/tmp/vlmsearch-demo", str(tmp_path / "demo-index"))
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "3 added, 1 skipped"
    assert lines[1].startswith("1 ") and "red.png" in lines[1]
    assert lines[-1] == "a red square"
