"""Causal check (Tang et al. 2024): deactivate one language's neurons, measure every language's perplexity.

``nll[X, Y]`` = mean per-token NLL (nats, averaged over texts) of language Y's held-out text with language X's
neurons zeroed at ``hook_post``; the random control zeroes, for each X, the same number of neurons per layer drawn
from outside X's set (seeded). Perplexity = ``exp(nll)``; deltas are against the unedited model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench import corpus
from workbench.backends import Model
from workbench.evaluation.utility import sequence_nll
from workbench.interventions import hooks_for
from workbench.neurons.interventions import deactivate, random_like
from workbench.neurons.masks import NeuronError, NeuronMask


@dataclass(frozen=True)
class CausalConfig:
    """Settings of the deactivation perplexity matrix."""

    split: str = "eval"
    """Corpus split of the held-out text (disjoint from the discovery split the masks come from)."""
    n_texts: int = 16
    """Held-out texts per evaluated language."""
    min_tokens: int = 16
    """Texts shorter than this (in tokens) are skipped."""
    max_length: int = 64
    """Texts are truncated to this many tokens."""
    batch_size: int = 8
    """Texts per forward."""
    seed: int = 0
    """Seed of the random-neuron control."""

    def __post_init__(self) -> None:
        if self.split not in corpus.SPLITS:
            raise NeuronError(f"unknown split {self.split!r}; use one of {', '.join(corpus.SPLITS)}")
        if self.n_texts < 1 or self.min_tokens < 1 or self.max_length < 2:
            raise NeuronError("n_texts >= 1, min_tokens >= 1 and max_length >= 2 are required")


@dataclass(frozen=True)
class DeactivationResult:
    """NLL matrices of a deactivation experiment (rows: deactivated language, columns: evaluated language)."""

    languages: tuple[str, ...]
    """Row and column labels."""
    base_nll: Float[Tensor, " lang"]
    """Unedited mean NLL per evaluated language."""
    nll: Float[Tensor, "lang lang"]
    """NLL with the row language's neurons zeroed."""
    random_nll: Float[Tensor, "lang lang"]
    """NLL with as many random neurons (per layer) zeroed."""
    n_neurons: dict[str, int]
    """Neurons zeroed per row language."""

    def ppl_delta(self, random: bool = False) -> Float[Tensor, "lang lang"]:
        """Perplexity change against the unedited model."""
        nll = self.random_nll if random else self.nll
        return nll.exp() - self.base_nll.exp().unsqueeze(0)

    def nll_delta(self, random: bool = False) -> Float[Tensor, "lang lang"]:
        """NLL change (nats per token) against the unedited model."""
        return (self.random_nll if random else self.nll) - self.base_nll.unsqueeze(0)

    def as_dict(self, matrix: Tensor) -> dict[str, dict[str, float]]:
        return {x: {y: round(float(matrix[i, j]), 6) for j, y in enumerate(self.languages)}
                for i, x in enumerate(self.languages)}

    def frame(self) -> pd.DataFrame:
        """Tidy table: one row per (deactivated, evaluated) with NLL/perplexity deltas and the random control."""
        rows = []
        for i, x in enumerate(self.languages):
            for j, y in enumerate(self.languages):
                rows.append({"deactivated": x, "evaluated": y, "n_neurons": self.n_neurons[x],
                             "base_ppl": float(self.base_nll[j].exp()), "ppl_delta": float(self.ppl_delta()[i, j]),
                             "ppl_delta_random": float(self.ppl_delta(True)[i, j]),
                             "nll_delta": float(self.nll_delta()[i, j]),
                             "nll_delta_random": float(self.nll_delta(True)[i, j])})
        return pd.DataFrame(rows)

    def diagonal_dominance(self) -> dict[str, Any]:
        """How diagonal the NLL-delta matrix is: per row/column argmax on the diagonal, diagonal vs off-diagonal."""
        delta, random = self.nll_delta(), self.nll_delta(True)
        n = delta.shape[0]
        off = ~torch.eye(n, dtype=torch.bool)
        diagonal = delta.diagonal()
        return {
            "rows_max_on_diagonal": int((delta.argmax(1) == torch.arange(n)).sum()),
            "columns_max_on_diagonal": int((delta.argmax(0) == torch.arange(n)).sum()),
            "n_languages": n,
            "mean_diagonal_nll_delta": float(diagonal.mean()),
            "mean_off_diagonal_nll_delta": float(delta[off].mean()) if n > 1 else float("nan"),
            "mean_diagonal_nll_delta_random": float(random.diagonal().mean()),
            "diagonal_exceeds_random": int((diagonal > random.diagonal()).sum()),
        }


def held_out_texts(tokenizer: Any, language: str, config: CausalConfig) -> list[str]:
    """The first ``n_texts`` held-out texts of ``language`` with at least ``min_tokens`` tokens."""
    rows = corpus.monolingual(language, split=config.split)
    texts = [row.text for row in rows]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    chosen = [text for text, length in zip(texts, lengths, strict=True) if length >= config.min_tokens]
    if not chosen:
        raise NeuronError(f"no {config.split} text of >= {config.min_tokens} tokens for {language!r}")
    return chosen[:config.n_texts]


def mean_nll(model: Model, texts: Sequence[str], interventions: Sequence[Any], config: CausalConfig) -> float:
    """Mean over texts of the per-token NLL with ``interventions`` active."""
    hooks = hooks_for(model, interventions)
    return float(sequence_nll(model, list(texts), hooks=hooks, batch_size=config.batch_size,
                              max_length=config.max_length).mean())


def deactivation_matrix(model: Model, mask: NeuronMask, config: CausalConfig = CausalConfig(), *,
                        texts: dict[str, list[str]] | None = None, progress: bool = True) -> DeactivationResult:
    """Zero each language's neurons (and a same-size random set) and measure every language's NLL."""
    languages = mask.languages
    texts = texts or {code: held_out_texts(model.tokenizer, code, config) for code in languages}
    generator = torch.Generator().manual_seed(config.seed)
    total = len(languages) * (1 + 2 * len(languages))
    bar = tqdm(total=total, desc="deactivation perplexity", disable=not progress, unit="eval")

    def measure(interventions: Sequence[Any], code: str) -> float:
        value = mean_nll(model, texts[code], interventions, config)
        bar.update()
        return value

    base = torch.tensor([measure([], code) for code in languages])
    nll = torch.zeros(len(languages), len(languages))
    random_nll = torch.zeros_like(nll)
    for i, x in enumerate(languages):
        selected = mask.of(x)
        control = random_like(selected, exclude=mask.union(), generator=generator)
        for j, y in enumerate(languages):
            nll[i, j] = measure(deactivate(selected), y)
            random_nll[i, j] = measure(deactivate(control), y)
    bar.close()
    return DeactivationResult(languages=languages, base_nll=base, nll=nll, random_nll=random_nll,
                              n_neurons=mask.per_language())
