"""English "How do I ...?" prompts from the help pages' "To ..." headings (and headings that are already questions),
with the help text after the heading as reference continuation in each language; and question/answer pairs from
every heading and the paragraph after it (prompt-conditioned utility contexts in each language)."""

from __future__ import annotations

import re
from collections import Counter

from corpus_build.clean import valid_translation, word_count
from corpus_build.libreoffice import Row, Unit
from workbench.corpus.splits import assign_split

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


def build_qa_pairs(
    pages: dict[str, dict[str, list[Unit]]], parallel: list[dict], lowercase: dict[str, float]
) -> list[dict]:
    """Question/answer pairs from every help heading (>= 2 words) and the paragraph right after it.

    The answer is a shipped parallel row (found by its English text, so a paragraph kept under another id after
    English deduplication still counts); its languages are the ones whose translation passed the cleaning. The
    question is the heading as a "How do I ...?" prompt where it has that shape, else the heading itself.
    """
    row_of_english = {row["text"]["en"].casefold(): row for row in parallel if row["source"] == "lo-help"}
    pairs = []
    for page, units in pages["en"].items():
        for heading, paragraph in zip(units, units[1:], strict=False):
            if heading.kind != "heading" or paragraph.kind != "paragraph" or word_count(heading.text) < 2:
                continue
            answer = row_of_english.get(paragraph.text.casefold())
            if answer is None:
                continue
            pairs.append(
                {
                    "id": f"qa:{page}#{heading.ident}",
                    "doc": f"lo-help:{page}",
                    "split": assign_split(f"lo-help:{page}"),
                    "heading": heading.text,
                    "question": heading_to_prompt(heading.text, lowercase) or heading.text,
                    "answer": answer["id"],
                }
            )
    return pairs
