"""A tiny local stand-in for the Hugging Face hub, and network ends that never answer, so that
download and offline tests touch no real network.

``FakeHub(files)`` serves ``{"ORG/REPO/FILE": bytes}`` at ``/ORG/REPO/resolve/main/FILE`` the
way huggingface_hub expects (HEAD with a commit id, an ETag that is the SHA-256, and the size;
GET with the bytes); point ``HF_ENDPOINT`` at ``hub.url``. ``etags`` overrides the ETag of a
file (a damaged download). ``silent_port()`` is a port that
accepts connections and never says a word (a network that drops packets, as far as a client
can tell); ``closed_port()`` one that refuses them.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, files: dict[str, bytes], etags: dict[str, str] | None = None) -> None:
        self.files = files
        self.etags = etags or {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output clean
                return

            def _lookup(self) -> bytes | None:
                hub.requests.append((self.command, self.path))
                path = self.path.split("?", 1)[0].lstrip("/")
                repo_and_rest = path.split("/resolve/main/", 1)
                if len(repo_and_rest) != 2:
                    return None
                self.key = f"{repo_and_rest[0]}/{repo_and_rest[1]}"
                return hub.files.get(self.key)

            def _headers(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                etag = hub.etags.get(self.key) or hashlib.sha256(data).hexdigest()
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()

            def do_HEAD(self) -> None:
                data = self._lookup()
                if data is None:
                    self.send_error(404)
                    return
                self._headers(data)

            def do_GET(self) -> None:
                data = self._lookup()
                if data is None:
                    self.send_error(404)
                    return
                self._headers(data)
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def silent_port() -> Iterator[int]:
    """A listening socket nobody reads from: connections complete (the kernel's backlog),
    requests get no answer."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def closed_port() -> int:
    """A local port with nothing listening (connections are refused at once)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
