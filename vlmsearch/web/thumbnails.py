"""Thumbnails for the web page: made once per file content, cached inside the index folder.

A thumbnail lives at ``<index>/thumbs/<id>-<digest prefix>.jpg``. The id says which indexed
file it shows, the prefix of the content digest the metadata store holds says which version:
when re-indexing records a new digest for a file, the old thumbnail's name no longer matches,
a new one is made and the old one deleted. A thumbnail carries its source's modification time
as its own; when they differ the thumbnail is remade, so an edited file shows up even before
the next ``vlmsearch index``.

Thumbnails are decoded with the same safe decoder as indexing (:func:`vlmsearch.decode.open_image`:
pixel limit, EXIF orientation applied, any mode to RGB), so a portrait photo stored sideways
with an orientation tag gets a portrait thumbnail.

Concurrent requests for the same thumbnail are safe: each writes a private temp file and
renames it over the target (``os.replace`` is atomic), so a reader sees no thumbnail or a whole
one. Within one process a striped lock also keeps two threads from doing the same work. When
the index folder is read-only the thumbnail is made in memory and not cached.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
import zlib
from pathlib import Path

from PIL import Image

from ..decode import open_image
from ..store.atomic import default_mode

THUMB_SIZE = 384
"""The longer side of a thumbnail, in pixels (grid cells are about 200 CSS px, so this stays
sharp on 2x screens)."""
DIGEST_CHARS = 16
JPEG_QUALITY = 82
_STRIPES = 64


class ThumbnailCache:
    """Make and cache thumbnails in ``folder``. Thread-safe."""

    def __init__(self, folder: Path, *, max_pixels: int, size: int = THUMB_SIZE) -> None:
        self.folder = folder
        self.max_pixels = max_pixels
        self.size = size
        self._locks = [threading.Lock() for _ in range(_STRIPES)]

    def path_for(self, ident: int, digest: str | None) -> Path:
        """Where the thumbnail of file ``ident`` with content ``digest`` is cached."""
        return self.folder / f"{ident}-{(digest or 'unknown')[:DIGEST_CHARS]}.jpg"

    def get(self, ident: int, source: str, digest: str | None) -> Path | bytes:
        """The thumbnail of indexed file ``ident`` (at ``source``): the cached file's path, or
        the JPEG bytes when it cannot be cached.

        Raises ``OSError`` when the source cannot be read (``FileNotFoundError`` when it is
        gone) and :class:`~vlmsearch.decode.DecodeError` when it is no longer a usable image.
        """
        target = self.path_for(ident, digest)
        if self._fresh(target, source):
            return target
        with self._locks[zlib.crc32(target.name.encode()) % _STRIPES]:
            if self._fresh(target, source):  # another thread made it meanwhile
                return target
            with open(source, "rb") as fh:
                mtime_ns = os.fstat(fh.fileno()).st_mtime_ns
                data = fh.read()
            jpeg = self.render(data, name=source)
            try:
                self._store(target, jpeg, mtime_ns)
            except OSError:
                return jpeg
            self._drop_older_versions(ident, keep=target)
        return target

    def render(self, data: bytes, name: str | None = None) -> bytes:
        """JPEG bytes of an upright thumbnail of the image ``data``, longer side ``size``
        (``name``: the file's name; a camera RAW extension sends it to LibRaw)."""
        img, _ = open_image(data, max_pixels=self.max_pixels, min_side=self.size, name=name)
        img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        return out.getvalue()

    @staticmethod
    def _fresh(target: Path, source: str) -> bool:
        try:
            thumb = target.stat()
            source_mtime = os.stat(source).st_mtime_ns
        except OSError:
            return False  # no thumbnail yet, or get() will read the source and say why not
        return thumb.st_size > 0 and thumb.st_mtime_ns == source_mtime

    def _store(self, target: Path, jpeg: bytes, mtime_ns: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(jpeg)
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
            os.chmod(tmp, default_mode(0o666))  # mkstemp made it owner-only
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _drop_older_versions(self, ident: int, *, keep: Path) -> None:
        for old in self.folder.glob(f"{ident}-*.jpg"):
            if old != keep:
                with contextlib.suppress(OSError):
                    old.unlink()
