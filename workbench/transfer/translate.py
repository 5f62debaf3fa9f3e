"""The ``translate`` task: few-shot English -> X translation by the model, scored with chrF and BLEU (sacrebleu),
as LangFIR scores generation control. The translation is the generated text up to its first line break."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from workbench.backends import Model
from workbench.generation import generate
from workbench.interventions import Steer, hooks_for
from workbench.transfer.tasks import TranslationItem, translation_prompt

__all__ = ["bleu_tokenizer", "corpus_bleu", "sentence_chrf", "translate"]

_CHARACTER_TOKENISED = ("ja", "ko", "th")


def translate(model: Model, items: Sequence[TranslationItem], shots: Sequence[TranslationItem], language: str, *,
              interventions: Sequence[Steer] = (), max_new_tokens: int = 64, batch_size: int = 8) -> list[str]:
    """Greedy few-shot translations of ``items`` into ``language`` with ``interventions`` active."""
    prompts = [translation_prompt(shots, item, language) for item in items]
    outputs = generate(model, prompts, hooks=hooks_for(model, interventions), max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
    return [output.strip().split("\n", 1)[0].strip() for output in outputs]


def sentence_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """chrF (0-100) of each hypothesis against its reference (the items a paired bootstrap resamples)."""
    metric = CHRF()
    return np.array([metric.sentence_score(hypothesis, [reference]).score
                     for hypothesis, reference in zip(hypotheses, references, strict=True)])


def bleu_tokenizer(language: str) -> str:
    """sacrebleu's tokenizer for ``language``: ``zh`` for Chinese, characters for Japanese, Korean and Thai (the
    MeCab tokenizers are not installed), ``13a`` otherwise."""
    if language == "zh":
        return "zh"
    return "char" if language in _CHARACTER_TOKENISED else "13a"


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], language: str) -> float:
    """Corpus BLEU (0-100) with :func:`bleu_tokenizer`'s tokenizer."""
    return BLEU(tokenize=bleu_tokenizer(language)).corpus_score(list(hypotheses), [list(references)]).score
