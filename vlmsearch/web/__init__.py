"""The local web page and HTTP API (``vlmsearch serve``).

Importing this package imports FastAPI; the rest of vlmsearch never does. It talks to the
index only through :class:`~vlmsearch.Engine`:

* :mod:`.app`: :func:`create_app`, the FastAPI app (page, API, error handling);
* :mod:`.routes`: the ``/api`` endpoints; :mod:`.schemas`: their documented shapes;
* :mod:`.service`: engine access under one lock; :mod:`.thumbnails`: the thumbnail cache;
* :mod:`.guards`: body-size, Host and security-header middleware;
* :mod:`.server`: binding a socket and running uvicorn;
* ``static/``: the page itself (hand-written HTML, CSS and JS; no build step, no CDN).
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
