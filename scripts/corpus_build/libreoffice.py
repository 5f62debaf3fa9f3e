"""LibreOffice help pages (aligned by paragraph id, source ``lo-help``) and UI strings (aligned by gettext msgid,
source ``lo-ui``) from the Debian ``libreoffice-help-*`` and ``libreoffice-l10n-*`` packages; English is the pivot."""

from __future__ import annotations

import hashlib
import re
import struct
from collections import defaultdict
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from corpus_build.clean import is_sentence_like, normalize, valid_translation
from corpus_build.fetch import Source

LO_VERSION = "4:7.4.7-1+deb12u14"
LO_LABEL = "LibreOffice 7.4.7 (Debian 12 package 4:7.4.7-1+deb12u14)"
# Language code -> Debian package suffix of libreoffice-help-* (None: no help package).
HELP_SUFFIX: dict[str, str | None] = {
    "en": "en-us",
    "es": "es",
    "hi": "hi",
    "zh": "zh-cn",
    "ja": "ja",
    "ru": "ru",
    "ar": None,
    "de": "de",
    "fr": "fr",
    "pt": "pt",
    "it": "it",
    "ko": "ko",
    "vi": "vi",
    "tr": "tr",
    "id": "id",
    "nl": "nl",
    "pl": "pl",
    "uk": None,
    "cs": "cs",
    "el": "el",
    "sv": "sv",
    "fi": "fi",
    "hu": "hu",
    "da": "da",
    "ca": "ca",
    "ro": None,
    "he": None,
    "fa": None,
    "th": None,
    "bn": None,
    "ta": None,
}
# Language code -> directory name of its help pages inside the package.
HELP_DIR = {"en": "en-US", "zh": "zh-CN"}
# Language code -> suffix of libreoffice-l10n-* (the UI translation catalogs).
L10N_SUFFIX = {"zh": "zh-cn"}
L10N_DIR = {"zh": "zh_CN"}


# -------------------------------------------------------- LibreOffice help


@dataclass(frozen=True)
class Unit:
    """One text element of a help page (a paragraph or a heading)."""

    ident: str
    kind: str
    text: str


class HelpPageParser(HTMLParser):
    """Collect elements with a ``par_id``/``hd_id`` id; skip macOS-only variants and code."""

    VOID = frozenset({"br", "img", "meta", "link", "input", "hr", "base", "wbr"})
    UNIT_ID = re.compile(r"^(par|hd)_id")
    SKIP_CLASSES = ("code", "image", "youtube")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.units: list[Unit] = []
        self._open: list | None = None  # [id, tag, text parts, nesting depth]
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open a unit, or track nesting (and hidden spans) inside one."""
        if tag in self.VOID:
            if self._open is not None and not self._hidden:
                self._open[2].append(" ")
            return
        attributes = dict(attrs)
        if self._hidden:
            self._hidden += 1
        elif self._open is not None:
            if attributes.get("class") == "MAC":
                self._hidden = 1
            else:
                self._open[3] += 1
        elif self._starts_unit(tag, attributes):
            self._open = [attributes["id"], tag, [], 0]

    def _starts_unit(self, tag: str, attributes: dict[str, str | None]) -> bool:
        """Whether an element is a text unit worth keeping."""
        css = attributes.get("class") or ""
        return (
            bool(self.UNIT_ID.match(attributes.get("id") or ""))
            and (tag == "p" or re.fullmatch(r"h[1-6]", tag) is not None)
            and not any(skip in css for skip in self.SKIP_CLASSES)
        )

    def handle_endtag(self, tag: str) -> None:
        """Close a hidden span, a nested element or the unit itself."""
        if tag in self.VOID or self._open is None:
            return
        if self._hidden:
            self._hidden -= 1
        elif self._open[3]:
            self._open[3] -= 1
        else:
            ident, open_tag, parts, _ = self._open
            kind = "paragraph" if open_tag == "p" else "heading"
            self.units.append(Unit(ident, kind, normalize("".join(parts))))
            self._open = None

    def handle_data(self, data: str) -> None:
        """Text inside a unit (outside hidden spans)."""
        if self._open is not None and not self._hidden:
            self._open[2].append(data)


def parse_help_page(path: Path) -> list[Unit]:
    """The units of one help page, first occurrence of each id only."""
    parser = HelpPageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    seen: set[str] = set()
    units = []
    for unit in parser.units:
        if unit.ident not in seen and unit.text:
            seen.add(unit.ident)
            units.append(unit)
    return units


def help_root(source: Source, code: str) -> Path:
    """The directory holding a language's help pages in its package."""
    return source.root / "usr" / "share" / "libreoffice" / "help" / HELP_DIR.get(code, code)


def read_help(source: Source, code: str) -> dict[str, list[Unit]]:
    """Help page (relative path) -> its units, for one language."""
    root = help_root(source, code)
    pages = sorted(root.glob("text/**/*.html"))
    return {str(p.relative_to(root)): parse_help_page(p) for p in pages}


# ---------------------------------------------------------- LibreOffice UI

_MNEMONIC = re.compile(r"\(\s*[_~]\w\s*\)|~|_(?=[^\W\d_])")
_PLACEHOLDER = re.compile(r"%\w|\$\(|\$\d|\{\w|%\d|\\[nt]")


def read_mo(path: Path) -> dict[str, str]:
    """Singular entries of a gettext .mo file: ``context\\x04msgid`` (or msgid) -> msgstr."""
    data = path.read_bytes()
    order = "<" if data[:4] == b"\xde\x12\x04\x95" else ">"
    count, originals, translations = struct.unpack(order + "3I", data[8:20])
    catalog = {}
    for i in range(count):
        o_len, o_off = struct.unpack(order + "2I", data[originals + 8 * i : originals + 8 * i + 8])
        t_len, t_off = struct.unpack(order + "2I", data[translations + 8 * i : translations + 8 * i + 8])
        key = data[o_off : o_off + o_len].decode("utf-8")
        if key and "\x00" not in key:
            catalog[key] = data[t_off : t_off + t_len].decode("utf-8")
    return catalog


def clean_ui(text: str) -> str:
    """UI string without mnemonics or markup, with the product name filled in."""
    return normalize(_MNEMONIC.sub("", text.replace("%PRODUCTNAME", "LibreOffice")))


def ui_document(catalog: str, context: str) -> str:
    """Source document of a UI string: its dialog (.ui file), or its resource id (e.g. one
    Calc function's description and parameter strings share ``SC_OPCODE_...``)."""
    return f"lo-ui:{catalog}/{context.split('|')[0]}"


def mo_dir(source: Source, code: str) -> Path:
    """Directory of a language's .mo catalogs inside its l10n package."""
    name = L10N_DIR.get(code, code)
    return source.root / "usr" / "lib" / "libreoffice" / "program" / "resource" / name / "LC_MESSAGES"


# ------------------------------------------------------------- alignment


@dataclass
class Row:
    """One aligned row: English pivot plus translations."""

    ident: str
    doc: str
    source: str
    kind: str
    text: dict[str, str]


def help_rows(pages: dict[str, dict[str, list[Unit]]]) -> list[Row]:
    """Align help units across languages by (page, unit id); English first."""
    rows = []
    for page, units in pages["en"].items():
        translations = {
            code: {u.ident: u.text for u in by_page.get(page, [])}
            for code, by_page in pages.items()
            if code != "en"
        }
        for unit in units:
            text = {"en": unit.text}
            text.update({code: t[unit.ident] for code, t in translations.items() if unit.ident in t})
            rows.append(Row(f"lo-help:{page}#{unit.ident}", f"lo-help:{page}", "lo-help", unit.kind, text))
    return rows


def ui_rows(catalogs: dict[str, dict[str, dict[str, str]]]) -> list[Row]:
    """Align UI strings by (catalog, context, msgid); the msgid is the English text."""
    keys = sorted(
        {(cat, key) for by_cat in catalogs.values() for cat, cat_map in by_cat.items() for key in cat_map}
    )
    rows = []
    for catalog, key in keys:
        context, _, msgid = key.rpartition("\x04")
        if _PLACEHOLDER.search(msgid.replace("%PRODUCTNAME", "")):
            continue
        text = {"en": clean_ui(msgid)}
        for code, by_cat in catalogs.items():
            translated = by_cat.get(catalog, {}).get(key)
            if translated:
                text[code] = clean_ui(translated)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
        rows.append(Row(f"lo-ui:{catalog}:{digest}", ui_document(catalog, context), "lo-ui", "ui", text))
    return rows


def filter_translations(rows: list[Row]) -> None:
    """Drop invalid translations in place (see the module docstring)."""
    for row in rows:
        english = row.text["en"]
        row.text = {"en": english} | {
            c: t for c, t in row.text.items() if c != "en" and valid_translation(english, t, c)
        }
    sources: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for row in rows:
        for code, text in row.text.items():
            sources[(row.source, code, text)].add(row.text["en"].casefold())
    for row in rows:
        row.text = {c: t for c, t in row.text.items() if c == "en" or len(sources[(row.source, c, t)]) == 1}


def select_rows(rows: list[Row]) -> list[Row]:
    """Sentence-like, translated, English-deduplicated rows."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = row.text["en"].casefold()
        if len(row.text) < 2 or key in seen or not is_sentence_like(row.text["en"]):
            continue
        seen.add(key)
        kept.append(row)
    return kept
