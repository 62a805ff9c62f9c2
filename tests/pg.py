"""A throwaway PostgreSQL server for tests: Debian's postgresql-15 binaries, a fresh data folder,
127.0.0.1 on a free port, password authentication (so the tests see what users see).

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user through
``setpriv``, which execs: the process we start is the postmaster itself. When the binaries are
missing, :func:`pg_missing_reason` says how to install them (``.ci/run`` installs them, so CI
always runs these tests).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("VLMSEARCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
PASSWORD = "s3cret-test"
_counter = itertools.count()


@dataclass
class PgServer:
    port: int
    host: str = "127.0.0.1"
    user: str = "postgres"

    def url(self, database: str, *, password: bool = True) -> str:
        auth = f"{self.user}:{PASSWORD}" if password else self.user
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        import psycopg

        name = f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(host=self.host, port=self.port, user=self.user, password=PASSWORD,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *cmd]


def pg_missing_reason() -> str | None:
    if not (PG_BIN / "initdb").is_file():
        return (f"PostgreSQL server binaries not found in {PG_BIN}: apt-get install postgresql-15 "
                "(or set VLMSEARCH_PG_BIN)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'vlmsearch[scale]'"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "running as root without setpriv: cannot start PostgreSQL as its own user"
    return None


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """Start a server in a new temp folder; stop it and delete the folder afterwards."""
    base = Path(tempfile.mkdtemp(prefix="vlmsearch-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--no-sync",
                      "-E", "UTF8", "--locale=C", "--auth-local=trust",
                      "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]),
        check=True, capture_output=True, text=True)
    log = (base / "server.log").open("w")
    if os.geteuid() == 0:
        shutil.chown(base / "server.log", "postgres")
    proc = subprocess.Popen(
        _as_postgres([str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
                      "-k", str(sockets), "-c", "listen_addresses=127.0.0.1",
                      "-c", "fsync=off", "-c", "full_page_writes=off",
                      "-c", "shared_buffers=32MB", "-c", "max_connections=60"]),
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            ready = subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p",
                                    str(port)], capture_output=True)
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start:\n"
                                   + (base / "server.log").read_text()[-2000:])
            time.sleep(0.2)
        yield PgServer(port)
    finally:
        # Fast shutdown of the server we started (SIGINT to its postmaster, by pid).
        proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)
