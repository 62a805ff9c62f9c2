"""CI must not pass while skipping tests it should run.

With ``VLMSEARCH_NO_SKIPS=1`` (``.ci/run`` sets it), a run fails when any test was skipped for
a reason not in :data:`ALLOWED`, and lists those tests. Locally, without the variable, skips
(for example a clone without ../shared) stay skips, with their reasons shown by ``-ra``.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

ALLOWED: list[tuple[str, str]] = [
    (r"this file system only takes valid Unicode names",
     "depends on the file system the clone is on (UTF-8-only ones, like ZFS with utf8only or "
     "macOS APFS, cannot hold such a name at all); CI's ext4/overlay runs the test"),
]
"""(regular expression on the skip reason, why the skip is acceptable even in CI)."""


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("VLMSEARCH_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    refused = [(report.nodeid, _reason(report)) for report in reporter.stats.get("skipped", [])
               if not any(re.search(pattern, _reason(report)) for pattern, _ in ALLOWED)]
    if not refused:
        return
    reporter.write_line("")
    reporter.write_line(f"{len(refused)} tests were skipped for reasons CI does not allow "
                        "(tests/skip_policy.py lists the allowed ones):", red=True)
    for nodeid, reason in refused:
        reporter.write_line(f"  {nodeid}: {reason}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
