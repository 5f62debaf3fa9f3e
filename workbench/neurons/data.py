"""Data for the neuron methods: monolingual texts up to a token budget, parallel items, and the pooled pass.

* The token-level methods (LAPE, 90p) read streaming statistics of ``mlp_pre`` from :func:`workbench.activations.
  harvest` over each language's monolingual text (the shipped corpus, ``discovery`` split by default), taken in the
  corpus' seeded order until ``tokens_per_language`` tokens; a language with less text uses all of its split.
* The item-level methods (CLAS categories, AP expertise) need one vector per sentence: :func:`pooled_gate_means`
  is a separate small pass giving, per text, the mean of act(gate) over its tokens (BOS and padding excluded) at
  every layer, on parallel items (the same item in every language).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from workbench import corpus
from workbench.activations import TokenBatch, texts_with_budget
from workbench.backends import Model
from workbench.neurons.gating import activation_function, activation_name, require_gated
from workbench.neurons.masks import NeuronError, check_languages
from workbench.readouts import pooled_means


@dataclass(frozen=True)
class TokenDataConfig:
    """Which monolingual text the token-level statistics are harvested from, and how."""

    split: str = "discovery"
    """Corpus split (``discovery`` / ``dev`` / ``eval``)."""
    tokens_per_language: int = 200_000
    """Token budget per language (BOS excluded); a language with less text in the split uses all of it."""
    max_length: int = 256
    """Longest tokenised text (BOS included); longer texts are truncated."""
    batch_tokens: int = 4096
    """Padded tokens per forward pass (texts are length-sorted, so short texts share large batches)."""
    histogram_bins: int = 256
    """Bins of the per-unit gate histograms (quantiles, exceedances, act(gate) statistics)."""
    histogram_max_abs: float = 100.0
    """Largest |gate pre-activation| inside the binned range (Gemma 3 270M's lie within about +-45)."""

    def __post_init__(self) -> None:
        if self.split not in corpus.SPLITS:
            raise NeuronError(f"unknown split {self.split!r}; use one of {', '.join(corpus.SPLITS)}")
        if self.tokens_per_language < 1 or self.max_length < 2 or self.batch_tokens < self.max_length:
            raise NeuronError("tokens_per_language >= 1, max_length >= 2 and batch_tokens >= max_length are required")


@dataclass(frozen=True)
class ParallelDataConfig:
    """Which parallel items the item-level methods (CLAS, AP expertise) pool act(gate) over."""

    split: str = "discovery"
    """Corpus split of the items."""
    n_items: int = 200
    """Items (each in every language); fewer if fewer are aligned across all languages."""
    max_length: int = 128
    """Longest tokenised item (BOS included)."""
    batch_size: int = 16
    """Texts per forward pass."""
    min_chars: int = 8
    """Items shorter than this in any language are skipped (UI labels carry little language signal)."""

    def __post_init__(self) -> None:
        if self.split not in corpus.SPLITS:
            raise NeuronError(f"unknown split {self.split!r}; use one of {', '.join(corpus.SPLITS)}")
        if self.n_items < 2 or self.max_length < 2 or self.batch_size < 1:
            raise NeuronError("n_items >= 2, max_length >= 2 and batch_size >= 1 are required")


def monolingual_texts(tokenizer: Any, language: str, config: TokenDataConfig) -> tuple[list[str], int]:
    """Texts of ``language`` in corpus order until the token budget is reached, and their token count."""
    rows = corpus.monolingual(language, split=config.split)
    texts = [row.text for row in rows if row.text.strip()]
    if not texts:
        raise NeuronError(f"no {config.split} text for language {language!r}")
    return texts_with_budget(tokenizer, texts, config.tokens_per_language, config.max_length)


def token_batches(tokenizer: Any, texts: Sequence[str], label: str, *, max_length: int, batch_tokens: int
                  ) -> list[TokenBatch]:
    """Texts tokenised (BOS prepended, truncated), length-sorted and packed into right-padded batches of at most
    ``batch_tokens`` padded tokens, all labelled ``label``."""
    if not texts:
        raise NeuronError(f"no texts to batch for {label!r}")
    encoded = sorted(tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"], key=len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches, chunk = [], []
    for ids in encoded:
        if chunk and (len(chunk) + 1) * len(ids) > batch_tokens:
            batches.append(_pad(chunk, pad, label))
            chunk = []
        chunk.append(ids)
    batches.append(_pad(chunk, pad, label))
    return batches


def _pad(rows: list[list[int]], pad: int, label: str) -> TokenBatch:
    width = max(len(row) for row in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        tokens[index, :len(row)] = torch.tensor(row)
        mask[index, :len(row)] = 1
    return TokenBatch(tokens, mask, [label] * len(rows))


def parallel_items(languages: Sequence[str], config: ParallelDataConfig) -> dict[str, list[str]]:
    """Language -> the texts of the first ``n_items`` items aligned across all ``languages`` (same order)."""
    languages = check_languages(languages)
    rows = [row for row in corpus.parallel(list(languages), split=config.split)
            if all(len(row.text[code].strip()) >= config.min_chars for code in languages)][:config.n_items]
    if len(rows) < 2:
        raise NeuronError(f"fewer than 2 parallel {config.split} items are aligned across {', '.join(languages)}")
    return {code: [row.text[code] for row in rows] for code in languages}


def pooled_gate_means(model: Model, texts: Sequence[str], *, batch_size: int = 16, max_length: int = 128,
                      progress: bool = True, description: str = "pool act(gate)"
                      ) -> Float[Tensor, "text layer neuron"]:
    """Per text, the mean of act(gate) over its tokens at every layer (BOS and padding excluded)."""
    require_gated(model)
    if not texts:
        raise NeuronError("no texts to pool")
    hooks = [f"blocks.{layer}.mlp.hook_pre" for layer in range(model.cfg.n_layers)]
    pooled = pooled_means(model, texts, hooks, transform=activation_function(activation_name(model)),
                          batch_size=batch_size, max_length=max_length, progress=progress, description=description)
    return einops.rearrange(pooled, "layer text neuron -> text layer neuron")
