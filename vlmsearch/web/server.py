"""Running the app: bind the socket ourselves, then hand it to uvicorn.

Binding first means a busy port or a bad ``--host`` becomes a clear :class:`UsageError` (not a
uvicorn log line and ``sys.exit``), ``--port 0`` works (the kernel picks a port and we print the
real URL), and the URL is printed only once the socket is accepting connections.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from collections.abc import Callable

from ..engine import Engine
from ..errors import UsageError
from .app import create_app
from .guards import LOOPBACK_HOSTS


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_for(host: str, port: int) -> str:
    host = host.strip("[]")
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``, or a :class:`UsageError` saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UsageError(f"cannot use --host {host!r}: {exc.strerror}; give an address of "
                         "this machine, such as 127.0.0.1 or 0.0.0.0") from exc
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":  # on Windows this would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is already in use (another server?); pick "
                             "another with --port") from exc
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def run_server(
    engine: Engine,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    allow_indexing: bool = False,
    on_ready: Callable[[str], None] = lambda url: None,
) -> None:
    """Serve ``engine`` until Ctrl-C (or SIGTERM). ``on_ready`` gets the URL once the socket
    accepts connections. On a loopback address only loopback ``Host`` names are answered."""
    import uvicorn

    sock = bind(host, port)
    allowed = LOOPBACK_HOSTS | {host.strip("[]").lower()} if is_loopback(host) else None
    app = create_app(engine, allow_indexing=allow_indexing, allowed_hosts=allowed)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    on_ready(url_for(host, sock.getsockname()[1]))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after shutting down
        pass
    finally:
        sock.close()
