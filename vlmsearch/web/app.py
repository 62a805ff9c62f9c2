"""The web app: a search page and a JSON API over one index (``vlmsearch serve``).

```python
from vlmsearch.web import create_app
app = create_app("path/to/index")          # or an open Engine
# uvicorn.run(app, host="127.0.0.1", port=8000)
```

``/`` is a hand-written page (``static/``: HTML, CSS and JS, nothing fetched from elsewhere);
``/api/...`` is the JSON API (:mod:`vlmsearch.web.routes`), described at ``/openapi.json``.
Errors are JSON ``{"detail": "message for people"}`` with a 4xx status for anything the
client can fix, so the page can show the message as is.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..engine import Engine
from ..errors import (
    ImageError,
    IndexFormatError,
    IndexLockedError,
    IndexNotFoundError,
    InputError,
    ModelMismatchError,
    ModelSpecError,
    ModelUnavailableError,
    NotInIndexError,
    StorageError,
    UsageError,
    VlmsearchError,
)
from .guards import BodyLimit, HostCheck, SecurityHeaders
from .routes import build_router
from .service import SearchService

log = logging.getLogger("vlmsearch.web")

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 20_000_000
FORM_OVERHEAD = 1_000_000
"""Room for the form's other fields and multipart framing on top of the image itself."""

STATUS: list[tuple[type[VlmsearchError], int]] = [
    (NotInIndexError, 404),
    (IndexNotFoundError, 404),
    (UsageError, 400),
    (InputError, 400),
    (ImageError, 422),
    (IndexLockedError, 409),
    (ModelMismatchError, 503),
    (ModelSpecError, 503),
    (ModelUnavailableError, 503),
    (IndexFormatError, 503),
    (StorageError, 503),
]
"""HTTP status of each library error (the first matching class wins; others are 500)."""


class SafeJSONResponse(JSONResponse):
    """JSON that survives file names that are not valid UTF-8 (kept by Python as lone
    surrogates): those are sent as ``\\udcxx`` escapes instead of failing to encode."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")


def status_for(exc: VlmsearchError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


def create_app(
    engine: Engine | str | os.PathLike[str],
    *,
    allow_indexing: bool = False,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    allowed_hosts: Iterable[str] | None = None,
) -> FastAPI:
    """Build the app for an open :class:`Engine`, or for the index folder at ``engine`` (opened
    now, so a missing index fails here, and closed when the app shuts down).

    ``allow_indexing`` adds ``POST /api/index``. ``max_upload_bytes`` caps query images
    (413 beyond). ``allowed_hosts``: answer only requests whose ``Host`` is one of these (use
    :data:`~vlmsearch.web.guards.LOOPBACK_HOSTS` when serving on a loopback address).
    """
    owned = not isinstance(engine, Engine)
    eng = Engine.open(engine, create=False) if not isinstance(engine, Engine) else engine
    service = SearchService(eng)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            eng.close()

    app = FastAPI(
        title="vlmsearch",
        version=__version__,
        description="Local semantic image search over one index: text → image, image → image, "
        "both combined, and image → text. Results are the objects `vlmsearch query --json` "
        "prints. Errors are `{\"detail\": message}`.",
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN; the page is local
        redoc_url=None,
        default_response_class=SafeJSONResponse,
        lifespan=lifespan,
    )
    app.state.service = service
    _add_error_handlers(app)
    app.include_router(build_router(service, max_upload_bytes=max_upload_bytes,
                                    allow_indexing=allow_indexing))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    @app.get("/duplicates", include_in_schema=False)
    def duplicates_page() -> FileResponse:
        return FileResponse(STATIC / "duplicates.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # The last one added runs first: hosts are checked before bodies are read, and every
    # answer, refusals included, gets the security headers.
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + FORM_OVERHEAD,
                       upload_limit=max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VlmsearchError)
    async def library_error(_: Request, exc: VlmsearchError) -> JSONResponse:
        return SafeJSONResponse({"detail": str(exc)}, status_code=status_for(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path",
                                                                             "body"))
            problems.append(f"{where}: {err.get('msg', 'invalid')}" if where
                            else str(err.get("msg", "invalid")))
        return SafeJSONResponse({"detail": "; ".join(problems) or "invalid request"},
                                status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return SafeJSONResponse({"detail": f"unexpected server error ({type(exc).__name__}); "
                                 "the server's log has the details"}, status_code=500)
