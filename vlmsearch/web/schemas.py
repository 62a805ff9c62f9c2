"""Response shapes, for the OpenAPI document only.

The endpoints return plain dicts built by :meth:`Hit.to_dict` / :meth:`TextHit.to_dict` and
:meth:`IndexInfo.to_dict`, so the JSON is exactly what ``vlmsearch query --json`` and
``vlmsearch info --json`` print; these models describe it and are not used to filter it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ImageHitModel(BaseModel):
    """One image result (``vlmsearch query --json``)."""

    rank: int = Field(description="1 for the best result")
    score: float | None = Field(description="cosine similarity between the query and the "
                                "image, in [-1, 1]; higher is closer; comparable within one "
                                "query; null when a filter alone was asked for")
    path: str = Field(description="the file's absolute path on the server")
    id: int = Field(description="the image's id: use it with /api/image, /api/thumb and like=")
    width: int | None = Field(description="pixel width after EXIF rotation")
    height: int | None = Field(description="pixel height after EXIF rotation")
    taken: str | None = Field(description="when the photo was taken, ISO 8601, as the photo "
                              "itself records it (with its UTC offset when known)")
    camera: str | None = Field(description="camera make and model")
    place: str | None = Field(description="where it was taken: town (city), country")
    lat: float | None = Field(description="GPS latitude")
    lon: float | None = Field(description="GPS longitude")
    matched: str | None = Field(description="semantic (the embedding), text (the query's "
                                "words are in the picture or its file name) or both; null "
                                "for a filter alone")
    ocr: str | None = Field(description="the piece of the text read in the picture that "
                            "matched the query's words")
    ocr_spans: list[list[int]] | None = Field(description="[start, end) of each matched word "
                                              "in ocr")


class TextHitModel(BaseModel):
    """One text result of an image→text query (``--target texts``)."""

    rank: int
    score: float
    text: str
    id: int
    source: str | None = Field(description="the file the text was added from")


class SearchResponse(BaseModel):
    results: list[ImageHitModel | TextHitModel] = Field(
        description="best first; image results for target=images, text results for "
        "target=texts")
    count: int = Field(description="len(results)")
    seconds: float = Field(description="time the server spent answering the query")
    target: Literal["images", "texts"]
    warnings: list[str] = Field(description="notes for the person asking: the query was cut "
                                "to the model's text length, or is in a language the model "
                                "was not trained for")


class InfoResponse(BaseModel):
    """What ``vlmsearch info --json`` prints."""

    path: str
    images: int
    texts: int
    failed: int
    pending: int = Field(description="files waiting to be re-embedded after a --reindex")
    unavailable: int = Field(description="indexed files kept while their folder could not be "
                             "reached (an unplugged drive)")
    with_date: int = Field(description="images whose metadata gives a date taken")
    with_position: int = Field(description="images with a GPS position")
    with_camera: int = Field(description="images whose metadata names a camera")
    ocr: bool = Field(description="whether index runs read the text in pictures (--ocr)")
    with_text: int = Field(description="images in which text was read")
    ocr_failed: int = Field(description="contents whose text could not be read")
    model: str
    model_id: str
    dim: int
    index_type: str
    recall_at_10: float | None = Field(description="measured recall@10 of the approximate "
                                       "search index; null for exact search")
    bytes: int
    created: str
    updated: str
    formats: dict[str, int] = Field(description="indexed images by format (jpeg, heif, dng, "
                                    "...), most first")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong and how to fix it, for people")


class IndexRequest(BaseModel):
    paths: list[str] = Field(min_length=1, description="files or folders on the server")
    exclude: list[str] = Field(default_factory=list, description="globs, as --exclude")
    include_hidden: bool = Field(False, description="also hidden files, as --include-hidden")
    ext: list[str] = Field(default_factory=list,
                           description="also files ending in these extensions, as --ext")
    only_ext: list[str] | None = Field(None, description="only these extensions, as --only-ext")
    ocr: bool | None = Field(None, description="read the text in pictures (true), stop (false), "
                             "or keep the index's setting (null), as --ocr / --no-ocr")
