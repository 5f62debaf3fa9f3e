"""The coherence rule on real text: human answers pass, the same tokens shuffled or looped fail (thresholds were
set on dev; this checks them on eval)."""

from __future__ import annotations

import random

import pytest

from workbench import corpus
from workbench.evaluation.coherence import (
    CoherenceConfig,
    distinct_n,
    is_coherent,
    repeated_ngram_share,
    score_coherence,
)
from workbench.prompting import QA_TEMPLATE


def test_repetition_measures_on_planted_sequences():
    assert repeated_ngram_share([1, 2, 3, 4, 5, 6]) == 0.0
    assert repeated_ngram_share([7, 8] * 10) == pytest.approx(1 - 2 / 18)
    assert repeated_ngram_share([1, 2]) == 0.0 and distinct_n([1]) == 1.0
    assert distinct_n([1, 2, 1, 2, 1, 2]) == pytest.approx(2 / 5)
    rule = CoherenceConfig()
    assert is_coherent(20, 0.0, 1.0, 4.0, rule) and not is_coherent(0, 0.0, 1.0, 4.0, rule)
    assert not is_coherent(20, 0.0, 1.0, float("nan"), rule) and not is_coherent(20, 0.5, 1.0, 4.0, rule)


@pytest.mark.model
def test_human_answers_are_coherent_and_shuffled_or_looped_tokens_are_not(gemma_fast):
    tokenizer = gemma_fast.tokenizer
    rng = random.Random(0)
    for language in ("es", "zh", "de"):
        items = [p for p in corpus.prompts(split="eval") if p.reference.get(language)][:16]
        prompts = [QA_TEMPLATE.format(prompt=p.prompt) for p in items]
        token_lists = [tokenizer(p.reference[language], add_special_tokens=False)["input_ids"][:32] for p in items]
        human = [" " + tokenizer.decode(ids) for ids in token_lists]
        shuffled = [tokenizer.decode(rng.sample(ids, len(ids))) for ids in token_lists]
        looped = [" " + tokenizer.decode(ids[:4] * 8) for ids in token_lists]
        rates = {name: sum(item.coherent for item in score_coherence(gemma_fast, prompts, texts)) / len(texts)
                 for name, texts in (("human", human), ("shuffled", shuffled), ("looped", looped))}
        assert len(items) >= 8, language
        assert rates["human"] >= 0.85 and rates["shuffled"] <= 0.15 and rates["looped"] == 0.0, (language, rates)
