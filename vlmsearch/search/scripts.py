"""Which writing systems a query uses, and whether a model was trained for them.

A text tower trained on English captions maps a Chinese, Russian or Arabic query to noise, and
the results look like a broken search. So a search notes when its query has letters of a
script that none of the model's languages is written in, and names a model that reads it.
Scripts are told apart by Unicode blocks (no language detection: a script is a fact of the
characters, the language would be a guess); Latin-script languages all count as one, since
an English-only model still reads a French query as roughly English words.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0370, 0x03FF, "Greek"), (0x1F00, 0x1FFF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"), (0x2DE0, 0x2DFF, "Cyrillic"), (0xA640, 0xA69F, "Cyrillic"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"), (0x0750, 0x077F, "Arabic"), (0x08A0, 0x08FF, "Arabic"),
    (0xFB50, 0xFDFF, "Arabic"), (0xFE70, 0xFEFF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"), (0x0980, 0x09FF, "Bengali"), (0x0A00, 0x0A7F, "Gurmukhi"),
    (0x0A80, 0x0AFF, "Gujarati"), (0x0B80, 0x0BFF, "Tamil"), (0x0C00, 0x0C7F, "Telugu"),
    (0x0C80, 0x0CFF, "Kannada"), (0x0D00, 0x0D7F, "Malayalam"), (0x0D80, 0x0DFF, "Sinhala"),
    (0x0E00, 0x0E7F, "Thai"), (0x0E80, 0x0EFF, "Lao"), (0x1000, 0x109F, "Myanmar"),
    (0x10A0, 0x10FF, "Georgian"), (0x1200, 0x139F, "Ethiopic"), (0x1780, 0x17FF, "Khmer"),
    (0x1100, 0x11FF, "Hangul"), (0x3130, 0x318F, "Hangul"), (0xAC00, 0xD7AF, "Hangul"),
    (0x3040, 0x309F, "Kana"), (0x30A0, 0x30FF, "Kana"), (0x31F0, 0x31FF, "Kana"),
    (0xFF66, 0xFF9F, "Kana"),
    (0x2E80, 0x2FDF, "Han"), (0x3400, 0x4DBF, "Han"), (0x4E00, 0x9FFF, "Han"),
    (0xF900, 0xFAFF, "Han"), (0x20000, 0x3FFFF, "Han"),
)

LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "zh": ("Han",), "ja": ("Han", "Kana"), "ko": ("Hangul", "Han"),
    "ru": ("Cyrillic",), "uk": ("Cyrillic",), "bg": ("Cyrillic",), "sr": ("Cyrillic",),
    "mk": ("Cyrillic",), "be": ("Cyrillic",), "kk": ("Cyrillic",), "mn": ("Cyrillic",),
    "el": ("Greek",), "hy": ("Armenian",), "he": ("Hebrew",), "yi": ("Hebrew",),
    "ar": ("Arabic",), "fa": ("Arabic",), "ur": ("Arabic",), "ps": ("Arabic",),
    "hi": ("Devanagari",), "mr": ("Devanagari",), "ne": ("Devanagari",),
    "bn": ("Bengali",), "pa": ("Gurmukhi",), "gu": ("Gujarati",), "ta": ("Tamil",),
    "te": ("Telugu",), "kn": ("Kannada",), "ml": ("Malayalam",), "si": ("Sinhala",),
    "th": ("Thai",), "lo": ("Lao",), "my": ("Myanmar",), "ka": ("Georgian",),
    "am": ("Ethiopic",), "km": ("Khmer",),
}
"""Non-Latin scripts of the languages that use them; any other language tag is Latin."""

SCRIPT_LANGUAGE_NAMES: dict[str, str] = {
    "Han": "Chinese", "Kana": "Japanese", "Hangul": "Korean", "Cyrillic": "Cyrillic",
    "Arabic": "Arabic", "Hebrew": "Hebrew", "Greek": "Greek", "Devanagari": "Devanagari",
    "Thai": "Thai",
}

MULTILINGUAL = "*"
"""A model's language list holding this reads (nearly) every script: no warnings."""


def char_script(ch: str) -> str | None:
    """The script of a letter: ``Latin`` or one of :data:`SCRIPT_RANGES`; None for digits,
    punctuation, spaces and symbols."""
    if not (ch.isalpha() or unicodedata.category(ch) == "Lo"):
        return None
    code = ord(ch)
    if code < 0x0250 or 0x1E00 <= code <= 0x1EFF or 0xFF21 <= code <= 0xFF5A:
        return "Latin"
    for lo, hi, name in SCRIPT_RANGES:
        if lo <= code <= hi:
            return name
    return "Latin" if "LATIN" in unicodedata.name(ch, "") else "Other"


def query_scripts(text: str) -> list[str]:
    """The scripts of ``text``'s letters, most letters first."""
    counts: dict[str, int] = {}
    for ch in text:
        script = char_script(ch)
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    return sorted(counts, key=lambda s: -counts[s])


def language_scripts(languages: Iterable[str]) -> set[str]:
    """The scripts a model trained on ``languages`` (language tags) reads."""
    out: set[str] = set()
    for tag in languages:
        base = tag.split("-")[0].lower()
        out.update(LANGUAGE_SCRIPTS.get(base, ("Latin",)))
    return out


def unread_scripts(text: str, languages: Iterable[str]) -> list[str]:
    """The scripts of ``text`` that a model trained on ``languages`` was not trained for
    (empty for a multilingual model, see :data:`MULTILINGUAL`)."""
    langs = list(languages)
    if MULTILINGUAL in langs:
        return []
    known = language_scripts(langs)
    return [s for s in query_scripts(text) if s not in known and s != "Other"]


def script_label(script: str) -> str:
    name = SCRIPT_LANGUAGE_NAMES.get(script, script)
    return name if name == script else f"{name} ({script} script)"
