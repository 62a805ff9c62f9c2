"""The skip policy CI runs under fails a run that skips a test for a reason not allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path, reason: str, strict: bool) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_example.py"
    test.write_text("import pytest\n\n\ndef test_runs():\n    assert True\n\n\n"
                    f"def test_skips():\n    pytest.skip({reason!r})\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VLMSEARCH_NO_SKIPS", None)
    if strict:
        env["VLMSEARCH_NO_SKIPS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.skip_policy",
                           "-p", "no:cacheprovider", str(test)], capture_output=True, text=True,
                          cwd=tmp_path, env=env)


def test_a_skip_fails_the_run_in_ci_unless_its_reason_is_allowed(tmp_path: Path) -> None:
    refused = _run(tmp_path, "the data is not here", strict=True)
    assert refused.returncode == 1, refused.stdout
    assert "test_skips: the data is not here" in refused.stdout
    assert _run(tmp_path, "the data is not here", strict=False).returncode == 0
    allowed = _run(tmp_path, "this file system only takes valid Unicode names", strict=True)
    assert allowed.returncode == 0, allowed.stdout
