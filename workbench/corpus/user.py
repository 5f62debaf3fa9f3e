"""Loaders for users' own data: per-language text files, aligned JSON lines, FLORES+.

* :func:`load_text_dir`: a directory of ``<code>.txt`` files, one text per line.
* :func:`load_aligned_jsonl`: a JSON-lines file of aligned rows.
* :func:`load_flores`: FLORES+ through the Hugging Face ``datasets`` package
  (optional; imported only when called), from the hub or from a local copy with
  the FLORES+ layout ``<root>/<split>/<subset>.{parquet,jsonl}``.

Rows without a split of their own get one from :func:`workbench.corpus.splits.assign_split`
applied to their document, like the shipped data.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.corpus.errors import CorpusError
from workbench.corpus.rows import MonolingualRow, ParallelRow
from workbench.corpus.splits import assign_split
from workbench.languages import get_language

__all__ = ["FLORES_HUB_NAME", "datasets_module", "load_aligned_jsonl", "load_flores", "load_text_dir"]

FLORES_HUB_NAME = "openlanguagedata/flores_plus"
_RESERVED = frozenset({"id", "doc", "split", "text", "source"})


def load_text_dir(path: str | Path, *, source: str = "user") -> dict[str, list[MonolingualRow]]:
    """Read a directory of per-language text files named ``<code>.txt`` (UTF-8, one text per line).

    Blank lines are skipped. Each file is one source document, so all of a
    language's rows share one split unless the split is given per file by a
    sub-directory: ``<path>/<split>/<code>.txt`` is also accepted.

    Returns:
        Language code -> rows, for every file found.

    Raises:
        CorpusError: the directory does not exist or holds no ``.txt`` file.
    """
    root = Path(path)
    if not root.is_dir():
        raise CorpusError(
            f"{root} is not a directory; expected a directory of <code>.txt files (e.g. en.txt)."
        )
    files = sorted(root.glob("*.txt")) + sorted(root.glob("*/*.txt"))
    if not files:
        raise CorpusError(
            f"No .txt files in {root}; expected files named <code>.txt (e.g. en.txt, hi.txt), "
            "optionally inside <split>/ sub-directories."
        )
    out: dict[str, list[MonolingualRow]] = {}
    for file in files:
        code = file.stem
        doc = str(file.relative_to(root))
        split = file.parent.name if file.parent != root else assign_split(f"{source}:{doc}")
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
        out.setdefault(code, []).extend(
            MonolingualRow(f"{source}:{doc}#{i}", f"{source}:{doc}", source, split, code, line)
            for i, line in enumerate(lines)
            if line
        )
    return out


def _row_texts(record: dict[str, Any], where: str) -> dict[str, str]:
    """Language -> text of one JSON record: its ``text`` object, or its other string fields."""
    texts = record.get("text")
    if texts is None:
        texts = {k: v for k, v in record.items() if k not in _RESERVED}
    if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        raise CorpusError(
            f'{where}: expected {{"text": {{"en": "...", "es": "..."}}}} or '
            '{"en": "...", "es": "..."} with string values.'
        )
    return texts


def load_aligned_jsonl(
    path: str | Path, langs: Sequence[str] = (), *, source: str = "user"
) -> list[ParallelRow]:
    """Read aligned rows from a JSON-lines file.

    Each line is ``{"id": ..., "doc": ..., "split": ..., "text": {"en": ..., "es": ...}}``
    or the flat form ``{"id": ..., "en": ..., "es": ...}``; ``id`` defaults to the
    line number, ``doc`` to the id, ``split`` to the seeded split of ``doc``.

    Args:
        path: The ``.jsonl`` file.
        langs: If given, keep only these languages and only rows that have all of them.
        source: Name stored in the rows' ``source``.

    Raises:
        CorpusError: the file is missing, a line is not valid JSON of that shape,
            or a language of ``langs`` occurs in no row (the message lists those that do).
    """
    file = Path(path)
    if not file.is_file():
        raise CorpusError(f"{file} does not exist; expected a .jsonl file of aligned rows.")
    rows: list[ParallelRow] = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(f"{file}:{number}: not valid JSON ({error.msg}).") from None
        texts = _row_texts(record, f"{file}:{number}")
        ident = str(record.get("id", number))
        doc = f"{source}:{record.get('doc', ident)}"
        rows.append(
            ParallelRow(
                f"{source}:{ident}", doc, source, record.get("split") or assign_split(doc), "user", texts
            )
        )
    return _select_languages(rows, langs, str(file))


def _select_languages(rows: list[ParallelRow], langs: Sequence[str], where: str) -> list[ParallelRow]:
    """Rows restricted to ``langs`` (all rows if empty); CorpusError for a language no row has."""
    if not langs:
        return rows
    present = sorted({code for row in rows for code in row.text})
    missing = [code for code in langs if code not in present]
    if missing:
        raise CorpusError(f"{where}: no rows in {missing}; languages present: {', '.join(present)}.")
    return [
        ParallelRow(r.id, r.doc, r.source, r.split, r.kind, {c: r.text[c] for c in langs})
        for r in rows
        if all(c in r.text for c in langs)
    ]


def datasets_module(caller: str) -> Any:
    """The ``datasets`` module, or a CorpusError saying that ``caller`` needs it and how to install it."""
    try:
        return importlib.import_module("datasets")
    except ImportError:
        raise CorpusError(
            f"{caller} needs the Hugging Face 'datasets' package: pip install datasets"
        ) from None


def _flores_subset(datasets: Any, name: str, subset: str, split: str) -> Any:
    """One FLORES+ subset/split as a ``datasets.Dataset``, from a local copy or the hub."""
    root = Path(name)
    if not root.is_dir():
        return datasets.load_dataset(name, subset, split=split)
    for suffix, builder in ((".parquet", "parquet"), (".jsonl", "json")):
        file = root / split / f"{subset}{suffix}"
        if file.is_file():
            return datasets.load_dataset(builder, data_files={split: str(file)}, split=split)
    raise CorpusError(f"No {split}/{subset}.parquet or {split}/{subset}.jsonl under {root} (FLORES+ layout).")


def load_flores(
    langs: Sequence[str], split: str = "dev", *, name: str = FLORES_HUB_NAME
) -> list[ParallelRow]:
    """FLORES+ sentences aligned across ``langs`` (workbench codes, e.g. ``["en", "hi"]``).

    Args:
        langs: Registered language codes; each maps to its FLORES+ subset (``hi`` -> ``hin_Deva``).
        split: The FLORES+ split, ``"dev"`` or ``"devtest"``; rows keep it as their split.
        name: Hub data set name, or a local directory with ``<split>/<subset>.parquet``
            (or ``.jsonl``) files holding ``id`` and ``text`` columns.

    Raises:
        CorpusError: ``datasets`` is not installed, or a local file is missing.
        UnknownLanguageError: a code is not registered.
    """
    subsets = {code: get_language(code).flores_code for code in langs}
    datasets = datasets_module("load_flores")
    by_id: dict[str, dict[str, str]] = {}
    docs: dict[str, str] = {}
    for code, subset in subsets.items():
        for record in _flores_subset(datasets, name, subset, split):
            ident = str(record["id"])
            by_id.setdefault(ident, {})[code] = record["text"]
            docs.setdefault(ident, str(record.get("url") or ident))
    return [
        ParallelRow(f"flores:{split}:{ident}", f"flores:{docs[ident]}", "flores", split, "sentence", texts)
        for ident, texts in sorted(by_id.items(), key=lambda item: _numeric_first(item[0]))
        if len(texts) == len(subsets)
    ]


def _numeric_first(ident: str) -> tuple[int, str]:
    """Sort key putting numeric ids in numeric order."""
    return (int(ident), "") if ident.isdigit() else (0, ident)
