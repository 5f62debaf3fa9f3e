"""Transfer tasks built only from the shipped corpus, split by source document.

* ``module``: which LibreOffice help module a paragraph comes from. Classes are the help modules; ``sdraw`` is
  merged into ``simpress`` (Draw and Impress are one component, ``sd``, in LibreOffice, and Draw alone has ~200
  discovery paragraphs). Training rows are English discovery paragraphs; every language is evaluated on the eval
  rows it shares with English, so English and target accuracy are measured on identical content (paired).
  Languages without help text (ar, he, fa, th, bn, ta) are evaluated on aligned UI strings, whose component
  (``sc`` -> scalc, ``sw`` -> swriter, ...) gives the same labels; the rows' source is recorded.
* ``translate``: few-shot English -> X translation of aligned eval sentences, the shots drawn from dev rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from workbench import corpus
from workbench.corpus import ParallelRow
from workbench.corpus.splits import order_key
from workbench.errors import WorkbenchError
from workbench.languages import get_language

__all__ = [
    "MODULES",
    "ModuleExample",
    "TaskError",
    "TranslationItem",
    "module_label",
    "module_rows",
    "module_training_rows",
    "translation_items",
    "translation_prompt",
]

MODULES: tuple[str, ...] = ("shared", "scalc", "sbasic", "swriter", "simpress", "sdatabase", "schart", "smath")
"""The module task's classes (``sdraw`` merged into ``simpress``)."""

_HELP_MERGES = {"sdraw": "simpress"}
_UI_COMPONENTS = {
    "sc": "scalc", "sca": "scalc", "scc": "scalc", "xsc": "scalc", "sw": "swriter", "sd": "simpress",
    "dba": "sdatabase", "rpt": "sdatabase", "chart": "schart", "sm": "smath", "sb": "sbasic", "basctl": "sbasic",
}
"""UI components that belong to one application; every other component (cui, svx, sfx, ...) is ``shared``."""

MIN_HELP_ROWS = 64
"""A language needs this many aligned help paragraphs in a split to be evaluated on help text (else UI strings)."""


class TaskError(WorkbenchError):
    """A transfer task cannot be built as asked (unknown task or language, too few rows)."""


@dataclass(frozen=True)
class ModuleExample:
    """One aligned row of the module task."""

    id: str
    """The corpus row id."""
    source: str
    """``lo-help`` or ``lo-ui``."""
    label: str
    """One of :data:`MODULES`."""
    text: dict[str, str]
    """Language code -> the row's text (English always present)."""


@dataclass(frozen=True)
class TranslationItem:
    """One sentence to translate, with its human reference."""

    id: str
    """The corpus row id."""
    source_text: str
    """The English sentence."""
    reference: str
    """The human translation."""


def module_label(row: ParallelRow) -> str:
    """The module class of a LibreOffice help paragraph or UI string (``lo-help:text/scalc/...`` -> ``scalc``)."""
    if row.source == "lo-help":
        module = row.doc.split(":", 1)[1].split("/")[1]
        module = _HELP_MERGES.get(module, module)
        if module not in MODULES:
            raise TaskError(f"help row {row.id} has module {module!r}, not one of {', '.join(MODULES)}")
        return module
    if row.source == "lo-ui":
        component = row.doc.split(":", 1)[1].split("/")[0]
        return _UI_COMPONENTS.get(component, "shared")
    raise TaskError(f"row {row.id} comes from {row.source!r}; the module task reads lo-help and lo-ui rows")


def _examples(rows: Sequence[ParallelRow]) -> list[ModuleExample]:
    return [ModuleExample(row.id, row.source, module_label(row), dict(row.text)) for row in rows
            if row.kind in ("paragraph", "ui")]


def module_training_rows(n: int, *, split: str = "discovery") -> list[ModuleExample]:
    """English training (or model-selection) rows: help paragraphs and UI strings of ``split``, at most
    ``ceil(n / classes)`` per class first, the rest filled in seeded order, so small classes are not drowned."""
    pool = _examples(corpus.parallel(["en"], split=split, source="lo-help"))
    pool += _examples(corpus.parallel(["en"], split=split, source="lo-ui"))
    pool.sort(key=lambda example: order_key(example.id))
    if n > len(pool):
        raise TaskError(f"asked for {n} English {split} rows for the module task; {len(pool)} exist")
    per_class = -(-n // len(MODULES))
    taken: Counter[str] = Counter()
    chosen: list[ModuleExample] = []
    for example in pool:
        if taken[example.label] < per_class:
            chosen.append(example)
            taken[example.label] += 1
    chosen_ids = {example.id for example in chosen}
    chosen += [example for example in pool if example.id not in chosen_ids][: max(0, n - len(chosen))]
    return chosen[:n]


def module_rows(language: str, split: str = "eval", *, n: int | None = None) -> list[ModuleExample]:
    """Rows of ``split`` aligned between English and ``language`` (help paragraphs where the language has at least
    :data:`MIN_HELP_ROWS` of them, else UI strings), the first ``n`` in seeded order."""
    get_language(language)
    if language == "en":
        raise TaskError("the module task evaluates a target language against English; pick a language other than en")
    help_rows = _examples(corpus.parallel(["en", language], split=split, source="lo-help"))
    rows = help_rows if len(help_rows) >= MIN_HELP_ROWS else _examples(
        corpus.parallel(["en", language], split=split, source="lo-ui"))
    if not rows:
        raise TaskError(f"{language} has no aligned help or UI text in the {split} split")
    if n is not None and n > len(rows):
        return rows
    return rows[:n]


def translation_items(language: str, split: str = "eval", *, n: int | None = None, max_chars: int = 200
                      ) -> list[TranslationItem]:
    """Aligned English/``language`` sentences of ``split`` (help paragraphs, else UI strings) no longer than
    ``max_chars`` in English, the first ``n`` in seeded order."""
    get_language(language)
    if language == "en":
        raise TaskError("translate goes from English into another language; pick a language other than en")
    items = []
    for source in ("lo-help", "lo-ui"):
        rows = corpus.parallel(["en", language], split=split, source=source)
        items += [TranslationItem(row.id, row.text["en"], row.text[language]) for row in rows
                  if len(row.text["en"]) <= max_chars and "\n" not in row.text["en"] + row.text[language]]
        if len(items) >= (n or MIN_HELP_ROWS):
            break
    if not items:
        raise TaskError(f"{language} has no aligned sentences of at most {max_chars} characters in {split}")
    return items[:n]


def translation_prompt(shots: Sequence[TranslationItem], item: TranslationItem, language: str) -> str:
    """The few-shot prompt: ``English: ...\\n<Language>: ...`` per shot, a blank line between, then the item."""
    name = get_language(language).name
    blocks = [f"English: {shot.source_text}\n{name}: {shot.reference}" for shot in shots]
    return "\n\n".join([*blocks, f"English: {item.source_text}\n{name}:"])
