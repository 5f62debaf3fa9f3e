"""Extra monolingual text: entries of the Debian ``fortunes-*`` packages, per language, within a character budget."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from corpus_build.clean import MIN_SCRIPT_FRACTION, is_substantial, lid_label, normalize
from corpus_build.fetch import Source
from workbench.corpus.splits import assign_split, order_key
from workbench.languages import get_language, script_fraction

# Language code -> (Debian package, version) of extra monolingual text.
FORTUNES: dict[str, tuple[str, str]] = {
    "de": ("fortunes-de", "0.35-1"),
    "es": ("fortunes-es", "1.36"),
    "it": ("fortunes-it", "1.99-4.1"),
    "pl": ("fortunes-pl", "0.0.20130525-3"),
    "ru": ("fortunes-ru", "1.52-3.1"),
    "zh": ("fortunes-zh", "2.98"),
    "cs": ("fortunes-cs", "2.0.9-1.1"),
}
FORTUNE_CHAR_BUDGET = 400_000  # per language, to keep the shipped data small

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ADDRESS = re.compile(r"://|www\.|@\w|\w\.(?:org|com|net)\b")


def fortune_entries(root: Path) -> Iterator[tuple[str, str]]:
    """(file, entry) pairs of the fortune files in a package ('off' files skipped)."""
    base = root / "usr" / "share" / "games" / "fortunes"
    for path in sorted(base.rglob("*")):
        relative = str(path.relative_to(base))
        if path.is_symlink() or not path.is_file() or path.suffix == ".dat" or "off" in path.parts:
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for entry in re.split(r"^%\s*$", _ANSI.sub("", raw), flags=re.M):
            text = normalize(entry, keep_newlines=True)
            if text:
                yield relative, text


def build_fortunes(code: str, source: Source) -> list[dict]:
    """Monolingual rows of one language from its fortunes package, within the budget."""
    candidates = []
    seen: set[str] = set()
    for relative, text in fortune_entries(source.root):
        if text in seen or "\ufffd" in text or _ADDRESS.search(text) or not is_substantial(text, code):
            continue
        seen.add(text)
        if (
            script_fraction(text, code) >= MIN_SCRIPT_FRACTION
            and lid_label(text) == get_language(code).lid_label
        ):
            doc = f"fortunes:{source.name}/{relative}"
            candidates.append(
                {
                    "id": f"{doc}#{len(candidates)}",
                    "doc": doc,
                    "lang": code,
                    "source": "fortunes",
                    "split": assign_split(doc),
                    "text": text,
                }
            )
    candidates.sort(key=lambda r: order_key(r["id"]))
    kept, used = [], 0
    for row in candidates:
        if used + len(row["text"]) > FORTUNE_CHAR_BUDGET:
            break
        kept.append(row)
        used += len(row["text"])
    return kept
