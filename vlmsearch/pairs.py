"""Image–caption pair files, for training and evaluation.

Formats read (picked by content, not only by extension):

* TSV, ``image<TAB>caption`` per line, with or without a header; Flickr's original
  ``Flickr8k.token.txt`` style names with a ``#N`` caption number (``x.jpg#0``) are accepted;
* CSV with a header naming an image column (``image``, ``filename``, ``file_name``, ``image_id``,
  ``path``) and a caption column (``caption``, ``text``, ``sentence``, ``raw``), or two columns;
* Karpathy-style JSON:
  ``{"images": [{"filename": ..., "split": ..., "sentences": [{"raw": ...}]}]}``.

A list file names the images of a split, one file name per line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, UsageError

_IMAGE_COLUMNS = ("image", "filename", "file_name", "image_id", "image_name", "path", "file")
_CAPTION_COLUMNS = ("caption", "text", "sentence", "raw", "comment", "description")
_CAPTION_NUMBER = re.compile(r"#\d+$")


@dataclass(frozen=True)
class PairSet:
    """Images (absolute paths, each once) and captions; ``caption_image[j]`` is the index of
    the image caption ``j`` describes. With captions in several declared languages,
    ``caption_lang[j]`` indexes ``languages``."""

    images: list[str]
    captions: list[str]
    caption_image: np.ndarray
    languages: tuple[str, ...] = ()
    caption_lang: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


_LANG_RE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


@dataclass(frozen=True)
class PairSource:
    """One ``--pairs`` argument: a pairs file and the language of its captions, if declared
    (``zh=captions-zh.tsv``)."""

    path: Path
    language: str | None = None

    @classmethod
    def parse(cls, text: str) -> PairSource:
        """``FILE`` or ``LANG=FILE`` (LANG: a language tag such as ``en``, ``zh``, ``pt-BR``).
        An existing file whose name merely contains ``=`` stays a plain file."""
        lang, sep, rest = text.partition("=")
        if sep and rest and _LANG_RE.fullmatch(lang) and not Path(text).exists():
            return cls(Path(rest).expanduser(), lang.lower())
        if sep and not Path(text).exists() and not _LANG_RE.fullmatch(lang):
            raise UsageError(f"--pairs {text!r}: expected FILE or LANG=FILE with a language "
                             "tag such as en or zh")
        return cls(Path(text).expanduser(), None)


def check_sources(sources: list[PairSource]) -> None:
    """Several pairs files must each declare a language, a different one."""
    if len(sources) > 1:
        if any(s.language is None for s in sources):
            raise UsageError("with several --pairs files, give each its language: "
                             "--pairs en=captions.tsv --pairs zh=captions-zh.tsv")
        langs = [s.language for s in sources]
        if len(set(langs)) != len(langs):
            raise UsageError(f"a language is given twice in --pairs ({', '.join(map(str, langs))})")


def read_pairs(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Captions by image file name (order kept, as in the file)."""
    file = Path(path)
    try:
        raw = file.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read the pairs file {file}: {exc.strerror or exc}") from exc
    stripped = raw.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        pairs = _read_json(raw, file)
    elif file.suffix.lower() == ".csv" or ("\t" not in raw.split("\n", 1)[0] and "," in raw):
        pairs = _read_csv(raw, file)
    else:
        pairs = _read_tsv(raw, file)
    if not pairs:
        raise InputError(f"{file} holds no image–caption pairs")
    return pairs


def _add(pairs: dict[str, list[str]], image: str, caption: str) -> None:
    image = _CAPTION_NUMBER.sub("", image.strip())
    caption = caption.strip()
    if image and caption:
        pairs[image].append(caption)


def _read_tsv(raw: str, file: Path) -> dict[str, list[str]]:
    pairs: dict[str, list[str]] = defaultdict(list)
    lines = raw.replace("\r\n", "\n").split("\n")
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        if "\t" not in line:
            raise InputError(f"{file}:{n + 1}: expected 'image<TAB>caption', got {line[:60]!r}")
        image, caption = line.split("\t", 1)
        if n == 0 and image.strip().lower() in _IMAGE_COLUMNS:
            continue  # header
        _add(pairs, image, caption)
    return dict(pairs)


def _read_csv(raw: str, file: Path) -> dict[str, list[str]]:
    rows = [r for r in csv.reader(io.StringIO(raw)) if r]
    if not rows:
        return {}
    header = [h.strip().lower() for h in rows[0]]
    img_col = next((header.index(c) for c in _IMAGE_COLUMNS if c in header), None)
    cap_col = next((header.index(c) for c in _CAPTION_COLUMNS if c in header), None)
    body = rows[1:]
    if img_col is None or cap_col is None:
        if len(rows[0]) < 2:
            raise InputError(f"{file}: expected columns image,caption")
        img_col, cap_col, body = 0, 1, rows
    pairs: dict[str, list[str]] = defaultdict(list)
    for row in body:
        if len(row) > max(img_col, cap_col):
            # a caption with unquoted commas spills into later columns: join them back
            caption = ",".join(row[cap_col:]) if cap_col == len(header) - 1 else row[cap_col]
            _add(pairs, row[img_col], caption)
    return dict(pairs)


def _read_json(raw: str, file: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"{file} is not valid JSON: {exc}") from exc
    images = data.get("images") if isinstance(data, dict) else data
    if not isinstance(images, list):
        raise InputError(f"{file}: expected a list of images with 'filename' and 'sentences'")
    pairs: dict[str, list[str]] = defaultdict(list)
    for entry in images:
        name = entry.get("filename") or entry.get("file_name") or entry.get("image")
        for sent in entry.get("sentences", entry.get("captions", [])):
            text = sent.get("raw") if isinstance(sent, dict) else sent
            if name and isinstance(text, str):
                _add(pairs, str(name), text)
    return dict(pairs)


def read_list(path: str | os.PathLike[str]) -> list[str]:
    """Image file names, one per line (blank lines and ``#`` comments ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the list file {path}: {exc.strerror or exc}") from exc
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def build_pairs(
    pairs_file: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    list_file: str | os.PathLike[str] | None = None,
) -> PairSet:
    """Join a pairs file, an image folder and an optional split list into a :class:`PairSet`.
    Every image must exist and have at least one caption."""
    captions = read_pairs(pairs_file)
    names = read_list(list_file) if list_file is not None else sorted(captions)
    return _join(captions, pairs_file, images_dir, names, list_file)


def _join(captions: dict[str, list[str]], pairs_file: str | os.PathLike[str],
          images_dir: str | os.PathLike[str], names: list[str],
          list_file: str | os.PathLike[str] | None) -> PairSet:
    folder = Path(images_dir)
    if not folder.is_dir():
        raise InputError(f"the image folder {folder} does not exist")
    if not names:
        raise InputError(f"{list_file} lists no images")
    no_caption = [n for n in names if n not in captions]
    if no_caption:
        raise InputError(
            f"{len(no_caption)} listed images have no caption in {pairs_file} "
            f"(e.g. {', '.join(no_caption[:3])}); check that the list and the pairs file match"
        )
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} images are missing from {folder} (e.g. {', '.join(missing[:3])})"
        )
    images, texts, owner = [], [], []
    for i, name in enumerate(dict.fromkeys(names)):
        images.append(str((folder / name).absolute()))
        for caption in captions[name]:
            texts.append(caption)
            owner.append(i)
    return PairSet(images, texts, np.asarray(owner, dtype=np.int64))


def build_pair_sources(
    sources: list[PairSource],
    images_dir: str | os.PathLike[str],
    list_file: str | os.PathLike[str] | None = None,
    *,
    max_per_language: int = 0,
) -> PairSet:
    """Join one or several pairs files (one per language) with an image folder and an optional
    split list: every image once, its captions in the order of ``sources``. Without a list, the
    images are those of the first file; every image needs a caption in every file.
    ``max_per_language`` (> 0) keeps only that many captions of each image per language."""
    check_sources(sources)
    if len(sources) == 1 and sources[0].language is None and max_per_language <= 0:
        return build_pairs(sources[0].path, images_dir, list_file)
    first = read_pairs(sources[0].path)
    names = read_list(list_file) if list_file is not None else sorted(first)
    base = [_join(first if i == 0 else read_pairs(s.path), s.path, images_dir, names,
                  list_file)
            for i, s in enumerate(sources)]
    images = base[0].images
    texts: list[str] = []
    owner: list[int] = []
    lang: list[int] = []
    for li, part in enumerate(base):
        seen = np.zeros(len(images), dtype=np.int64)
        for caption, img in zip(part.captions, part.caption_image.tolist(), strict=True):
            if max_per_language > 0 and seen[img] >= max_per_language:
                continue
            seen[img] += 1
            texts.append(caption)
            owner.append(img)
            lang.append(li)
    languages = tuple(s.language or "und" for s in sources)
    return PairSet(images, texts, np.asarray(owner, dtype=np.int64), languages,
                   np.asarray(lang, dtype=np.int64))
