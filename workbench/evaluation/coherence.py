"""Coherence of each output: does it read as text, or has steering broken it?

Three per-item measures, over the evaluated model's tokens (so they work for every script, spaces or not):

* ``repeated_ngram_share``: the share of the output's token 3-grams that repeat an earlier 3-gram of it (a loop
  such as "la la la la" is near 1, ordinary prose near 0);
* ``distinct_2``: distinct token bigrams / bigrams (low for loops);
* ``nll``: mean negative log-likelihood per token of the output after its prompt under the *unsteered* model
  (high for word salad, mixed scripts and token soup).

The rule (:class:`CoherenceConfig`): an output is **coherent** when it has at least ``min_tokens`` tokens, its
repeated 3-gram share is at most ``max_repeated_share``, its distinct-2 at least ``min_distinct_2`` and its NLL at
most ``max_nll``. The thresholds were set on dev reference answers after their QA prompts (Gemma 3 270M, 32 tokens:
human text NLL 3.6-6.2 nats in es/hi/zh, the same tokens shuffled 6.9-11.8, looped 1.1-4.5 with a repeated 3-gram
share near 0.8) and are checked on eval text by ``tests/test_coherence.py``: human text passes, shuffled or looped
text fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from workbench.backends import Model
from workbench.evaluation.utility import continuation_nll


@dataclass(frozen=True)
class CoherenceConfig:
    """The stated coherence rule."""

    n: int = 3
    """N-gram length of the repetition measure."""
    max_repeated_share: float = 0.3
    """Most repeated n-grams a coherent output may have (share of its n-grams)."""
    min_distinct_2: float = 0.6
    """Fewest distinct bigrams a coherent output may have (share of its bigrams)."""
    max_nll: float = 6.5
    """Highest mean NLL per token (nats) under the unsteered model, after the prompt."""
    min_tokens: int = 1
    """Shorter outputs (e.g. empty ones) are not coherent."""


@dataclass(frozen=True)
class CoherenceItem:
    """One output's coherence measures and verdict."""

    n_tokens: int
    """Tokens in the output."""
    repeated_ngram_share: float
    """Share of the output's n-grams that repeat an earlier one (0 when it has none)."""
    distinct_2: float
    """Distinct bigrams / bigrams (1 when it has none)."""
    nll: float
    """Mean NLL per token after the prompt under the unsteered model (NaN for an empty output)."""
    coherent: bool
    """The verdict of :class:`CoherenceConfig`'s rule."""


def repeated_ngram_share(tokens: Sequence[int], n: int = 3) -> float:
    """Share of the n-grams of ``tokens`` that occurred earlier in ``tokens``."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(tokens: Sequence[int], n: int = 2) -> float:
    """Distinct n-grams / n-grams of ``tokens`` (1.0 when there are none)."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def is_coherent(n_tokens: int, repeated: float, distinct: float, nll: float, config: CoherenceConfig) -> bool:
    """The coherence rule on one output's measures."""
    return (n_tokens >= config.min_tokens and repeated <= config.max_repeated_share
            and distinct >= config.min_distinct_2 and nll <= config.max_nll)


def score_coherence(model: Model, prompts: Sequence[str], outputs: Sequence[str],
              config: CoherenceConfig = CoherenceConfig()) -> list[CoherenceItem]:
    """Per-output coherence; ``model`` must be the unsteered model (no hooks active)."""
    token_lists = [model.tokenizer(text, add_special_tokens=False)["input_ids"] for text in outputs]
    nll = continuation_nll(model, prompts, outputs).tolist()
    items = []
    for tokens, item_nll in zip(token_lists, nll, strict=True):
        repeated, distinct = repeated_ngram_share(tokens, config.n), distinct_n(tokens, 2)
        items.append(CoherenceItem(len(tokens), repeated, distinct, item_nll,
                                   is_coherent(len(tokens), repeated, distinct, item_nll, config)))
    return items
