"""Access to the corpus shipped in ``workbench/data`` (built by ``scripts/build_corpus.py``).

Sources (``source=`` values):

* ``"lo-help"``: LibreOffice help paragraphs/headings aligned by paragraph id.
* ``"lo-ui"``: LibreOffice UI strings aligned by gettext msgid (sentence-like ones).
* ``"udhr"``: the Universal Declaration of Human Rights aligned by article
  (preamble + 30 articles); :func:`udhr` gives all of its versions (500+).
* ``"fortunes"`` (monolingual only): Debian fortune cookies.

Every row belongs to one split, fixed by a seed and inherited from its source
document (see :mod:`workbench.corpus.splits`), so splits are disjoint by row and
by document and are the same in every language.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, TypeVar

from workbench.corpus.errors import NotEnoughRowsError, UnknownOptionError
from workbench.corpus.rows import MonolingualRow, ParallelRow, Prompt, QAPair
from workbench.corpus.splits import SEED, SPLITS
from workbench.languages import Language, UnknownLanguageError, get_language, unknown_language_message

__all__ = [
    "MONOLINGUAL_SOURCES",
    "PARALLEL_SOURCES",
    "languages",
    "monolingual",
    "parallel",
    "prompts",
    "qa_pairs",
    "stats",
    "udhr",
    "udhr_languages",
]

PARALLEL_SOURCES: tuple[str, ...] = ("lo-help", "lo-ui", "udhr")
MONOLINGUAL_SOURCES: tuple[str, ...] = ("lo-help", "lo-ui", "udhr", "fortunes")
ALL = "all"
T = TypeVar("T")


# ------------------------------------------------------------------ loading


def _read_jsonl_xz(name: str) -> list[dict[str, Any]]:
    """Rows of one shipped xz-compressed JSON-lines file."""
    with (
        resources.files("workbench").joinpath("data", name).open("rb") as raw,
        lzma.open(raw, "rt", encoding="utf-8") as f,
    ):
        return [json.loads(line) for line in f]


@lru_cache(maxsize=1)
def shipped_sha256() -> str:
    """sha256 of the shipped corpus's build manifest: the version of every shipped text, for cache keys."""
    return hashlib.sha256(resources.files("workbench").joinpath("data", "manifest.json").read_bytes()).hexdigest()


@lru_cache(maxsize=1)
def _manifest() -> dict[str, Any]:
    """The build manifest (sources, counts, token counts, UDHR versions)."""
    return json.loads(
        resources.files("workbench").joinpath("data", "manifest.json").read_text(encoding="utf-8")
    )


@lru_cache(maxsize=1)
def _parallel_rows() -> tuple[ParallelRow, ...]:
    """All LibreOffice parallel rows, in the build's seeded order."""
    return tuple(
        ParallelRow(r["id"], r["doc"], r["source"], r["split"], r["kind"], r["text"])
        for r in _read_jsonl_xz("parallel.jsonl.xz")
    )


@lru_cache(maxsize=1)
def _udhr_rows() -> tuple[ParallelRow, ...]:
    """UDHR rows (one per article), text keyed by UDHR version code."""
    return tuple(
        ParallelRow(r["id"], r["doc"], "udhr", r["split"], "article", r["text"])
        for r in _read_jsonl_xz("udhr.jsonl.xz")
    )


@lru_cache(maxsize=1)
def _extra_rows() -> tuple[MonolingualRow, ...]:
    """Monolingual-only rows (fortunes)."""
    return tuple(
        MonolingualRow(r["id"], r["doc"], r["source"], r["split"], r["lang"], r["text"])
        for r in _read_jsonl_xz("monolingual.jsonl.xz")
    )


@lru_cache(maxsize=1)
def _prompt_rows() -> tuple[Prompt, ...]:
    """All prompts."""
    return tuple(
        Prompt(r["id"], r["doc"], r["source"], r["split"], r["heading"], r["prompt"], r["reference"])
        for r in _read_jsonl_xz("prompts.jsonl.xz")
    )


@lru_cache(maxsize=1)
def _parallel_rows_by_id() -> dict[str, ParallelRow]:
    """The LibreOffice parallel rows by id (question/answer pairs name their answer by it)."""
    return {row.id: row for row in _parallel_rows()}


@lru_cache(maxsize=1)
def _qa_pair_rows() -> tuple[dict[str, str], ...]:
    """All question/answer pairs (the answer as a parallel row id), in the build's seeded order."""
    return tuple(_read_jsonl_xz("qa_pairs.jsonl.xz"))


# --------------------------------------------------------------- validation


def _check_split(split: str) -> None:
    """Raise UnknownOptionError unless ``split`` is a split name or ``"all"``."""
    if split != ALL and split not in SPLITS:
        raise UnknownOptionError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)} or {ALL!r}.")


def _check_source(source: str | None, allowed: Sequence[str]) -> None:
    """Raise UnknownOptionError unless ``source`` is None or one of ``allowed``."""
    if source is not None and source not in allowed:
        raise UnknownOptionError(
            f"Unknown source {source!r}; use one of {', '.join(allowed)} (or None for all)."
        )


def _check_language(code: str) -> Language:
    """The shipped language ``code``; UnknownLanguageError listing the shipped codes otherwise."""
    shipped = _manifest()["languages"]
    if code not in shipped:
        raise UnknownLanguageError(unknown_language_message(code, shipped))
    return get_language(code)


def _take(rows: list[T], n: int | None, what: str) -> list[T]:
    """The first ``n`` rows (all if None); NotEnoughRowsError if fewer exist."""
    if n is None:
        return rows
    if n < 0:
        raise UnknownOptionError(f"n must be >= 0 (or None for all rows), got {n} for {what}.")
    if n > len(rows):
        raise NotEnoughRowsError(
            f"Requested n={n} rows of {what}, but only {len(rows)} exist; pass n<={len(rows)} or n=None."
        )
    return rows[:n]


def _in_split(split_of_row: str, split: str) -> bool:
    """Whether a row's split matches the requested one (``"all"`` matches all)."""
    return split == ALL or split_of_row == split


# --------------------------------------------------------------------- API


def languages() -> list[Language]:
    """The languages the shipped corpus has parallel and monolingual data for."""
    return [get_language(code) for code in _manifest()["languages"]]


def parallel(
    langs: Sequence[str], split: str = "discovery", *, n: int | None = None, source: str | None = None
) -> list[ParallelRow]:
    """Aligned rows that have text in every language of ``langs``.

    Args:
        langs: Language codes (see :func:`languages`), e.g. ``["en", "hi"]``.
        split: ``"discovery"``, ``"dev"``, ``"eval"`` or ``"all"``.
        n: Return the first ``n`` rows of the seeded order (all if None).
        source: ``"lo-help"``, ``"lo-ui"``, ``"udhr"``, or None for the two
            LibreOffice sources (the UDHR is only included when asked for).

    Returns:
        Rows whose ``text`` holds exactly the requested languages.

    Raises:
        UnknownLanguageError: a code is not shipped (the message lists the codes).
        UnknownOptionError: unknown split or source.
        NotEnoughRowsError: ``n`` exceeds the number of rows (the message says how many exist).
    """
    if isinstance(langs, str):
        raise UnknownOptionError(f"langs must be a list of language codes, got the string {langs!r}; e.g. "
                                 "['en', 'es']")
    codes = [_check_language(code).code for code in langs]
    if not codes:
        raise UnknownOptionError("langs is empty; pass at least one language code, e.g. ['en', 'es'].")
    repeated = sorted({code for code in codes if codes.count(code) > 1})
    if repeated:
        raise UnknownOptionError(f"langs lists {', '.join(repeated)} more than once; give each language once")
    _check_split(split)
    _check_source(source, PARALLEL_SOURCES)
    if source == "udhr":
        columns = {code: get_language(code).udhr_code for code in codes}
        pool = _udhr_rows()
    else:
        columns = {code: code for code in codes}
        pool = tuple(r for r in _parallel_rows() if source is None or r.source == source)
    rows = [
        ParallelRow(r.id, r.doc, r.source, r.split, r.kind, {c: r.text[k] for c, k in columns.items()})
        for r in pool
        if _in_split(r.split, split) and all(k in r.text for k in columns.values())
    ]
    return _take(rows, n, f"parallel({codes}, split={split!r}, source={source!r})")


def monolingual(
    lang: str, split: str = "discovery", *, n: int | None = None, source: str | None = None
) -> list[MonolingualRow]:
    """Text in one language: its side of the parallel data, of the UDHR and of fortunes.

    Args:
        lang: A shipped language code.
        split: ``"discovery"``, ``"dev"``, ``"eval"`` or ``"all"``.
        n: Return the first ``n`` rows (all if None).
        source: One of :data:`MONOLINGUAL_SOURCES`, or None for all of them.

    Raises:
        UnknownLanguageError, UnknownOptionError, NotEnoughRowsError: as :func:`parallel`.
    """
    language = _check_language(lang)
    _check_split(split)
    _check_source(source, MONOLINGUAL_SOURCES)
    def wanted(row: Any) -> bool:  # filtered before any row object is built: ~20k parallel rows per language
        return _in_split(row.split, split) and (source is None or row.source == source)

    rows = [
        MonolingualRow(r.id, r.doc, r.source, r.split, lang, r.text[lang])
        for r in _parallel_rows()
        if lang in r.text and wanted(r)
    ]
    rows += [
        MonolingualRow(r.id, r.doc, r.source, r.split, lang, r.text[language.udhr_code])
        for r in _udhr_rows()
        if language.udhr_code in r.text and wanted(r)
    ]
    rows += [r for r in _extra_rows() if r.lang == lang and wanted(r)]
    return _take(rows, n, f"monolingual({lang!r}, split={split!r}, source={source!r})")


def prompts(split: str = "discovery", *, n: int | None = None, langs: Sequence[str] = ()) -> list[Prompt]:
    """English weak prompts, optionally only those with references in all of ``langs``.

    Raises:
        UnknownLanguageError, UnknownOptionError, NotEnoughRowsError: as :func:`parallel`.
    """
    codes = [_check_language(code).code for code in langs]
    _check_split(split)
    rows = [p for p in _prompt_rows() if _in_split(p.split, split) and all(c in p.reference for c in codes)]
    return _take(rows, n, f"prompts(split={split!r}, langs={codes})")


def qa_pairs(lang: str, split: str = "discovery", *, n: int | None = None) -> list[QAPair]:
    """English questions from help headings, each answered by the paragraph after its heading in ``lang``.

    Pairs whose paragraph has no valid ``lang`` translation are left out, so every answer is the real help text
    (never borrowed from elsewhere). Utility contexts: ``QA_TEMPLATE.format(prompt=pair.question) + " " +
    pair.answer``.

    Raises:
        UnknownLanguageError, UnknownOptionError, NotEnoughRowsError: as :func:`parallel`.
    """
    code = _check_language(lang).code
    _check_split(split)
    by_id = _parallel_rows_by_id()
    rows = [
        QAPair(p["id"], p["doc"], p["split"], p["question"], by_id[p["answer"]].text[code], code)
        for p in _qa_pair_rows()
        if _in_split(p["split"], split) and code in by_id[p["answer"]].text
    ]
    return _take(rows, n, f"qa_pairs({code!r}, split={split!r})")


def udhr_languages() -> dict[str, dict[str, str]]:
    """UDHR version code -> ``{"name", "bcp47", "iso6393"}`` for every shipped version."""
    return dict(_manifest()["udhr_versions"])


def udhr(codes: Sequence[str] | None = None, split: str = ALL, *, n: int | None = None) -> list[ParallelRow]:
    """UDHR articles aligned across versions, keyed by UDHR version code (see :func:`udhr_languages`).

    Args:
        codes: UDHR version codes such as ``"spa"``, ``"hin"``, ``"cmn_hans"``;
            None for every version (rows then hold the versions that have the article).
        split: A split name or ``"all"`` (the default: the UDHR is small).
        n: Return the first ``n`` rows (all if None).
    """
    versions = udhr_languages()
    unknown = [c for c in codes or () if c not in versions]
    if unknown:
        raise UnknownLanguageError(unknown_language_message(unknown[0], sorted(versions)))
    _check_split(split)
    rows = [r for r in _udhr_rows() if _in_split(r.split, split) and all(c in r.text for c in codes or ())]
    if codes is not None:
        rows = [
            ParallelRow(r.id, r.doc, r.source, r.split, r.kind, {c: r.text[c] for c in codes}) for r in rows
        ]
    return _take(rows, n, f"udhr({list(codes) if codes else None}, split={split!r})")


def stats() -> dict[str, Any]:
    """Counts of the shipped corpus, JSON-serializable (for ``workbench corpus`` / ``info``).

    Keys: ``languages`` (list of ``{code, name, script, parallel, monolingual_tokens,
    parallel_by_split, monolingual_tokens_by_split, prompts_with_reference, qa_pairs_by_split}``),
    ``udhr_languages`` (distinct ISO 639-3 languages), ``udhr_versions``,
    ``prompts``, ``splits`` (``{split: {parallel, prompts, udhr_articles, documents}}``),
    ``sources`` (name, version, registry, licences) and ``seed``.
    ``parallel`` counts the rows aligned with English (for ``en``: all rows).
    """
    manifest = _manifest()
    prompt_rows = _prompt_rows()
    entries = []
    for lang in languages():
        by_split = manifest["parallel"][lang.code]
        tokens = manifest["monolingual_tokens"][lang.code]
        entries.append(
            {
                "code": lang.code,
                "name": lang.name,
                "script": lang.script,
                "parallel": sum(by_split.values()),
                "monolingual_tokens": sum(tokens.values()),
                "parallel_by_split": dict(by_split),
                "monolingual_tokens_by_split": dict(tokens),
                "prompts_with_reference": sum(lang.code in p.reference for p in prompt_rows),
                "qa_pairs_by_split": dict(manifest["qa_pairs"][lang.code]),
            }
        )
    splits = {
        split: {
            "parallel": sum(r.split == split for r in _parallel_rows()),
            "prompts": sum(p.split == split for p in prompt_rows),
            "udhr_articles": sum(r.split == split for r in _udhr_rows()),
            "documents": len({r.doc for r in _parallel_rows() if r.split == split}),
        }
        for split in SPLITS
    }
    return {
        "languages": entries,
        "udhr_languages": len({v["iso6393"] for v in manifest["udhr_versions"].values()}),
        "udhr_versions": len(manifest["udhr_versions"]),
        "prompts": len(prompt_rows),
        "splits": splits,
        "sources": [
            {k: s[k] for k in ("name", "version", "registry", "licences")} for s in manifest["sources"]
        ],
        "seed": SEED,
    }
