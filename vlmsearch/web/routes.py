"""The JSON API under ``/api``: thin HTTP wrappers around :class:`SearchService`.

Files are only ever served by id: the id is looked up in the metadata store and the path stored
there is what is opened. No request parameter is ever used as a path, so there is nothing to
traverse; a symbolic link is served only because its own path is in the index.

Endpoints are plain ``def`` functions: FastAPI runs them in its thread pool, and the service
serialises engine access with a lock.
"""

from __future__ import annotations

import io
import os
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from PIL import Image, UnidentifiedImageError

from ..decode import DecodeError, open_image
from ..formats import is_raw
from ..search.filters import Filter
from .schemas import ErrorResponse, IndexRequest, InfoResponse, SearchResponse
from .service import SearchService, Target

MAX_K = 500
MAX_ID = 2**63 - 1  # SQLite's largest integer: larger ids cannot exist (and would not bind)
WEB_FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png",
               "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}
"""Formats every browser shows; others (TIFF, HEIC, ...) are sent converted to JPEG."""
REVALIDATE = {"Cache-Control": "no-cache"}  # cache, but ask (ETag) whether the file changed

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {400: "bad request", 404: "no such image in the index",
                       413: "upload too large", 422: "invalid parameter or unusable image"}.items()
}

ImageId = Annotated[int, Path(ge=1, le=MAX_ID, description="an image id from a search result")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of results")]
TargetParam = Annotated[Target, Query(description="images, or texts added with add-texts")]
Negative = Annotated[list[str], Query(alias="not", max_length=20,
                                      description="push results away from this (repeatable)")]
Like = Annotated[int | None, Query(ge=1, le=MAX_ID,
                                   description="id of an indexed image: more like this")]
Q = Annotated[str | None, Query(max_length=1000, description="words to search for")]
After = Annotated[str | None, Query(max_length=40, description="taken on or after this day, "
                                    "month or year (2023-07-14, 2023-07, 2023)")]
Before = Annotated[str | None, Query(max_length=40, description="taken on or before this day, "
                                     "month or year (inclusive)")]
Folders = Annotated[list[str], Query(alias="in", max_length=20,
                                     description="only files under this folder (repeatable)")]
Camera = Annotated[str | None, Query(max_length=200, description="camera make or model "
                                     "contains this, any case")]
Place = Annotated[str | None, Query(max_length=200, description="city, region or country, any "
                                    "case, accents ignored")]
Near = Annotated[str | None, Query(max_length=100, description="LAT,LON[,KM]: within KM "
                                   "(default 10) of a position")]
Types = Annotated[list[str], Query(alias="type", max_length=20,
                                   description="file extension (repeatable)")]
Sort = Annotated[str | None, Query(description="score, date (oldest first) or -date")]
MinScore = Annotated[float | None, Query(ge=-1, le=1, description="drop results scoring "
                                         "below this")]
Match = Annotated[str, Query(description="both: also pictures whose text or file name has "
                             "every word of q; semantic: the embedding only; text: the "
                             "words only")]


def _filter(after: str | None, before: str | None, folders: list[str], camera: str | None,
            place: str | None, near: str | None, types: list[str]) -> Filter:
    return Filter(after=after, before=before, folders=[f for f in folders if f.strip()],
                  camera=camera, place=place, near=near, types=[t for t in types if t.strip()])


def build_router(
    service: SearchService, *, max_upload_bytes: int, allow_indexing: bool = False
) -> APIRouter:
    """The ``/api`` routes for ``service``; ``/api/index`` only when ``allow_indexing``."""
    router = APIRouter(prefix="/api", responses=ERRORS)

    @router.get("/info", response_model=InfoResponse, summary="Index statistics")
    def info() -> dict[str, Any]:
        """Counts, model and size of the index: the fields of `vlmsearch info --json`."""
        return service.info()

    @router.get("/search", response_model=None, summary="Search by text and/or an indexed image",
                responses={200: {"model": SearchResponse}})
    def search(q: Q = None, like: Like = None, negative: Negative = [],  # noqa: B006
               k: K = 10, target: TargetParam = "images", after: After = None,
               before: Before = None, folders: Folders = [],  # noqa: B006
               camera: Camera = None, place: Place = None, near: Near = None,
               types: Types = [], sort: Sort = None,  # noqa: B006
               min_score: MinScore = None, match: Match = "both") -> dict[str, Any]:
        """Text → image (`q`), more like an indexed image (`like`), or both; `not` pushes
        results away from a concept. With `target=texts`, returns added texts instead.
        `after`, `before`, `in`, `camera`, `place`, `near` and `type` keep only matching
        images (the true top `k` among them); with no `q` or `like`, the matches are listed
        by date."""
        where = _filter(after, before, folders, camera, place, near, types)
        return service.search(text=q, like=like, negative=negative, k=k, target=target,
                              where=where, sort=sort, min_score=min_score,
                              match=match).to_dict()

    @router.post("/search", response_model=None, summary="Search with an uploaded image",
                 responses={200: {"model": SearchResponse}})
    def search_upload(
        image: Annotated[UploadFile | None, File(description="query image (jpg, png, webp, "
                                                 "...); size-capped")] = None,
        q: Annotated[str | None, Form(max_length=1000)] = None,
        like: Annotated[int | None, Form(ge=1, le=MAX_ID)] = None,
        negative: Annotated[list[str], Form(alias="not", max_length=20)] = [],  # noqa: B006
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        target: Annotated[Target, Form()] = "images",
        after: Annotated[str | None, Form(max_length=40)] = None,
        before: Annotated[str | None, Form(max_length=40)] = None,
        folders: Annotated[list[str], Form(alias="in", max_length=20)] = [],  # noqa: B006
        camera: Annotated[str | None, Form(max_length=200)] = None,
        place: Annotated[str | None, Form(max_length=200)] = None,
        near: Annotated[str | None, Form(max_length=100)] = None,
        types: Annotated[list[str], Form(alias="type", max_length=20)] = [],  # noqa: B006
        sort: Annotated[str | None, Form()] = None,
        min_score: Annotated[float | None, Form(ge=-1, le=1)] = None,
        match: Annotated[str, Form()] = "both",
    ) -> dict[str, Any]:
        """Image → image (or image → text with `target=texts`), optionally combined with words
        (`q`) and `not` terms, as `multipart/form-data`. Same fields as GET, plus `image`."""
        data = _read_upload(image, max_upload_bytes) if image is not None else None
        where = _filter(after, before, folders, camera, place, near, types)
        return service.search(text=q, image=data, like=like, negative=negative, k=k,
                              target=target, where=where, sort=sort, min_score=min_score,
                              match=match).to_dict()

    @router.get("/duplicates", summary="Groups of duplicate pictures")
    def duplicates(
        similar: Annotated[bool, Query(description="also group similar pictures (burst "
                                       "shots, mirrored copies)")] = False,
        min_score: Annotated[float | None, Query(
            ge=-1, le=1, description="near links also need this cosine (with similar: the "
            "similar threshold)")] = None,
    ) -> dict[str, Any]:
        """`groups`: what `vlmsearch duplicates --json` prints, each `{"kind": "exact" |
        "near" | "similar", "score": float, "members": [{"id", "path"}, ...]}`, surest
        first; found from the stored vectors and hashes."""
        return service.duplicates(similar=similar, min_score=min_score)

    @router.get("/image/{image_id}", summary="An indexed image, full size",
                response_class=Response,
                responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
    def image(image_id: ImageId, request: Request) -> Response:
        """The original file of an indexed image (converted to JPEG when browsers cannot show
        its format). Only files in the index can be fetched, by id."""
        record = service.record(image_id)
        try:
            with Image.open(record.path) as img:  # RAW files are converted (TIFF to Pillow)
                media_type = None if is_raw(record.path) else WEB_FORMATS.get(img.format or "")
        except UnidentifiedImageError:
            media_type = None  # maybe HEIC: open_image registers its opener
        except OSError as exc:
            raise _unreadable(image_id, exc) from exc
        if media_type is not None:
            try:
                return _file(record.path, media_type, request)
            except OSError as exc:
                raise _unreadable(image_id, exc) from exc
        try:
            with open(record.path, "rb") as fh:
                data = fh.read()
            upright, _ = open_image(data, max_pixels=service.engine.settings.max_pixels,
                                    name=record.path)
        except OSError as exc:
            raise _unreadable(image_id, exc) from exc
        except DecodeError as exc:
            raise HTTPException(422, f"image {image_id} cannot be shown: {exc.reason}") from exc
        out = io.BytesIO()
        upright.save(out, format="JPEG", quality=90)
        return Response(out.getvalue(), media_type="image/jpeg", headers=REVALIDATE)

    @router.get("/thumb/{image_id}", summary="A thumbnail of an indexed image",
                response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def thumb(image_id: ImageId, request: Request) -> Response:
        """A JPEG thumbnail (longer side 384 px, EXIF orientation applied), made once and
        cached in the index folder until the file changes."""
        try:
            _, thumbnail = service.thumbnail(image_id)
        except OSError as exc:
            raise _unreadable(image_id, exc) from exc
        except DecodeError as exc:
            raise HTTPException(422, f"image {image_id} cannot be shown: {exc.reason}") from exc
        if isinstance(thumbnail, bytes):
            return Response(thumbnail, media_type="image/jpeg", headers=REVALIDATE)
        try:
            return _file(os.fspath(thumbnail), "image/jpeg", request)
        except OSError as exc:  # replaced meanwhile by a newer version: ask again
            raise HTTPException(503, "the thumbnail changed while it was sent; retry") from exc

    if allow_indexing:
        @router.post("/index", summary="Index files or folders on the server",
                     responses={415: {"model": ErrorResponse}})
        def index(body: IndexRequest, request: Request) -> dict[str, Any]:
            """Like `vlmsearch index PATHS --json`. Only present when the server was started
            with `--allow-indexing`. Searches wait until it finishes."""
            if request.headers.get("content-type", "").split(";")[0].strip() != \
                    "application/json":
                # A cross-site HTML form cannot send JSON, so this refuses forged requests.
                raise HTTPException(415, "send the request as application/json")
            return service.index(body.paths, body.exclude, include_hidden=body.include_hidden,
                                 add_extensions=body.ext, only_extensions=body.only_ext,
                                 ocr=body.ocr)

    return router


def _file(path: str, media_type: str, request: Request) -> Response:
    """The file at ``path``, or 304 when the browser's copy (``If-None-Match``) is current."""
    response = FileResponse(path, media_type=media_type, headers=REVALIDATE,
                            stat_result=os.stat(path))
    etag = response.headers.get("etag")
    wanted = request.headers.get("if-none-match", "")
    if etag and etag in {tag.strip().removeprefix("W/") for tag in wanted.split(",")}:
        return Response(status_code=304, headers={"etag": etag, **REVALIDATE})
    return response


def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"the uploaded image is larger than the limit of "
                            f"{limit / 1_000_000:.0f} MB; use a smaller one")
    return data


def _unreadable(image_id: int, exc: OSError) -> HTTPException:
    if isinstance(exc, FileNotFoundError):
        return HTTPException(404, f"image {image_id} is in the index but its file is gone; "
                             "run `vlmsearch index` on its folder again")
    reason = exc.strerror or type(exc).__name__
    return HTTPException(403 if isinstance(exc, PermissionError) else 404,
                         f"image {image_id} cannot be read: {reason}")
