"""What a search asks for, checked once before any model or index work."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Literal

from ..errors import UsageError

Target = Literal["images", "texts"]
ImageInput = str | os.PathLike[str] | bytes
TARGETS: tuple[Target, ...] = ("images", "texts")


@dataclass(frozen=True)
class SearchRequest:
    """One query. Any mix of ``text``, ``image`` (a file's path or its bytes) and ``like``
    (the id of an indexed image: "more like this"); ``negative`` texts push results away; ``k``
    results of ``target`` (images, or the texts added with ``add-texts``)."""

    text: str | None = None
    image: ImageInput | None = None
    like: int | None = None
    negative: tuple[str, ...] = ()
    k: int = 10
    target: Target = "images"

    def checked(self) -> SearchRequest:
        """This request with blank ``--not`` terms dropped, or a :class:`UsageError` saying
        what to change."""
        check_k_and_target(self.k, self.target)
        if self.text is not None and not self.text.strip():
            raise UsageError("the query text is empty; type some words to search for")
        if self.image is not None and self.like is not None:
            raise UsageError("search with an image or with an indexed one (like), not both")
        if self.text is None and self.image is None and self.like is None:
            raise UsageError("give a TEXT to search for, an --image, an indexed image to search "
                             "like, or a mix (--not alone is not a query)")
        return replace(self, negative=tuple(n for n in self.negative if n.strip()))


def check_k_and_target(k: int, target: str) -> None:
    if not isinstance(k, int) or k < 1:
        raise UsageError(f"the number of results must be at least 1 (got {k})")
    if target not in TARGETS:
        raise UsageError(f"unknown --target {target!r}: use images or texts")
