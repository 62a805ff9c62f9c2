"""Reading the text inside pictures (signs, screenshots, receipts, slides), offline.

RapidOCR runs PP-OCRv6's detection and recognition models (ONNX files inside the ``rapidocr``
wheel; Chinese and English) on the ONNX Runtime vlmsearch already uses. Most photos hold no
text, so the work is staged to be cheap for them:

1. the file is decoded once more, at most ``OCR_SIDE`` pixels on its longer side (JPEGs in
   draft mode), and text is *detected* on a copy at most ``QUICK_SIDE`` pixels long: a
   fraction of the cost of a full pass. No text region there → done;
2. only then detection runs again at ``DETECT_SIDE`` pixels, to find small text too, and
   *recognition* runs on the regions found, cut from the ``OCR_SIDE`` image.

Lines the recogniser is not sure of (confidence below ``MIN_CONFIDENCE``) are dropped. Each
run uses one thread for ONNX Runtime, so OCR overlaps with the embedding model instead of
fighting it for cores. Nothing here writes anything; the indexer stores the results.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .decode import DecodeError, open_image

log = logging.getLogger("vlmsearch.ocr")

OCR_VERSION = 1
"""Bump when the pipeline changes in a way worth re-reading every picture for."""
OCR_SIDE = 2000
DRAFT_SIDE = 1000
"""JPEGs are decoded at the smallest DCT scale whose shorter side keeps this many pixels."""
QUICK_SIDE = 320
DETECT_SIDE = 960
MIN_CONFIDENCE = 0.7
MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class OcrResult:
    """What was read in one picture: ``text`` (lines, top to bottom, joined by newlines; empty
    when there is none) or the ``error`` that stopped reading it."""

    text: str = ""
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class OcrUnavailable(Exception):
    """rapidocr is not installed (the message says how to install it)."""


class TextReader:
    """A thread-safe (one picture at a time) RapidOCR pipeline, loaded on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Any = None

    def _load(self) -> Any:
        if self._engine is None:
            try:
                from rapidocr import RapidOCR
            except ImportError as exc:
                raise OcrUnavailable(
                    "reading text in pictures (--ocr) needs the rapidocr package: "
                    "pip install rapidocr") from exc
            logging.getLogger("RapidOCR").setLevel(logging.ERROR)
            self._engine = RapidOCR(params={
                "Global.log_level": "error",
                "Global.use_cls": False,
                "Global.text_score": MIN_CONFIDENCE,
                "Global.max_side_len": OCR_SIDE,
                "Det.limit_type": "max",
                "Det.limit_side_len": DETECT_SIDE,
                "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            })
        return self._engine

    def check(self) -> None:
        """Raise :class:`OcrUnavailable` now rather than in the middle of a run."""
        self._load()

    def read_file(self, path: str, *, max_pixels: int = MAX_PIXELS) -> OcrResult:
        """The text in the picture at ``path`` (never raises for a bad file: the result says
        what went wrong)."""
        start = time.perf_counter()
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            img, _ = open_image(data, max_pixels=max_pixels, min_side=DRAFT_SIDE, name=path)
        except OSError as exc:
            return OcrResult(error=f"could not read file: {exc.strerror or exc}")
        except DecodeError as exc:
            return OcrResult(error=exc.reason)
        try:
            text = self.read_image(img)
        except OcrUnavailable:
            raise
        except Exception as exc:  # a model failure on one picture must not stop a run
            return OcrResult(error=f"text recognition failed: {type(exc).__name__}: {exc}"[:300])
        return OcrResult(text=text, seconds=time.perf_counter() - start)

    def read_image(self, img: Image.Image) -> str:
        """The text in an upright RGB picture: lines top to bottom, joined by newlines."""
        img = _fit(img, OCR_SIDE)
        bgr = np.ascontiguousarray(np.asarray(img)[:, :, ::-1])
        with self._lock:
            engine = self._load()
            detector = engine._load_det_model()
            quick = np.ascontiguousarray(np.asarray(_fit(img, QUICK_SIDE))[:, :, ::-1])
            if detector(quick).boxes is None:
                return ""  # the common case: a photo without text
            result = engine(bgr)
        lines = [str(t).strip() for t in (getattr(result, "txts", None) or ())]
        return "\n".join(line for line in lines if line)


def _fit(img: Image.Image, side: int) -> Image.Image:
    """``img`` shrunk to at most ``side`` pixels on its longer side (never enlarged)."""
    if max(img.size) <= side:
        return img.convert("RGB") if img.mode != "RGB" else img
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.convert("RGB").resize(size, Image.Resampling.BILINEAR)
