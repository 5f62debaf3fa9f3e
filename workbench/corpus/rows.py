"""Row types returned by the corpus API."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MonolingualRow", "ParallelRow", "Prompt", "QAPair"]


@dataclass(frozen=True)
class ParallelRow:
    """One aligned row: the same text in several languages.

    Attributes:
        id: Stable row id (unique within its source).
        doc: Source document the row comes from (the unit of split assignment).
        source: ``"lo-help"``, ``"lo-ui"``, ``"udhr"`` or a user source name.
        split: ``"discovery"``, ``"dev"`` or ``"eval"`` (or a user data set's own split).
        kind: ``"paragraph"``, ``"heading"``, ``"ui"``, ``"article"`` or ``"user"``.
        text: Language code -> text, for the requested languages.
    """

    id: str
    doc: str
    source: str
    split: str
    kind: str
    text: dict[str, str]


@dataclass(frozen=True)
class MonolingualRow:
    """One piece of text in one language (a paragraph, UI string, article or fortune)."""

    id: str
    doc: str
    source: str
    split: str
    lang: str
    text: str


@dataclass(frozen=True)
class Prompt:
    """An English "weak prompt" (a question or instruction) with reference continuations.

    Attributes:
        id: Stable prompt id.
        doc: Source document (a help page); the split follows it.
        source: Where the text comes from (``"lo-help"``).
        split: ``"discovery"``, ``"dev"`` or ``"eval"``.
        heading: The real help heading the prompt was made from.
        prompt: The English prompt ("How do I insert a table?").
        reference: Language code -> the help text that follows the heading in that
            language (``"en"`` always present); a language is absent where its
            translation was missing or failed the cleaning checks.
    """

    id: str
    doc: str
    source: str
    split: str
    heading: str
    prompt: str
    reference: dict[str, str]


@dataclass(frozen=True)
class QAPair:
    """A help heading asked as an English question, answered by the paragraph after it in one language.

    Attributes:
        id: Stable pair id (the heading's).
        doc: Source document (a help page); the split follows it.
        split: ``"discovery"``, ``"dev"`` or ``"eval"``.
        question: The English question ("How do I insert a table?", or the heading itself where it has no
            "To ..." or question shape).
        answer: The paragraph after the heading, in the requested language (a human translation for languages
            other than English).
        lang: The answer's language.
    """

    id: str
    doc: str
    split: str
    question: str
    answer: str
    lang: str
