"""AP expertise (Kojima et al. 2024): how well each neuron's sentence-level response separates one language.

A neuron's response to a sentence is its act(gate) mean-pooled over the sentence's tokens (the pooled pass in
:mod:`workbench.neurons.data`). For each language, the average precision (AP) of that response as a score for
"this sentence is in the language" against all the other languages' sentences. The ``top_n`` neurons with the
highest AP (they fire for the language) and the ``bottom_n`` with the lowest (they go quiet for it) are kept;
Kojima et al. fix both sets to the language's typical values to steer towards it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import einops
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from workbench.neurons.masks import NeuronError, NeuronMask, check_languages


@dataclass(frozen=True)
class ExpertiseConfig:
    """AP-expertise selection settings."""

    top_n: int = 100
    """Highest-AP neurons kept per language."""
    bottom_n: int = 100
    """Lowest-AP neurons kept per language."""
    chunk: int = 4096
    """Neurons scored at once (bounds memory: items x chunk floats per sort)."""

    def __post_init__(self) -> None:
        if self.top_n < 0 or self.bottom_n < 0 or self.top_n + self.bottom_n == 0:
            raise NeuronError("top_n and bottom_n must be >= 0 and not both 0")
        if self.chunk < 1:
            raise NeuronError(f"chunk must be >= 1, got {self.chunk}")


def average_precision(scores: Float[Tensor, "sample unit"], labels: Bool[Tensor, " sample"]) -> Float[Tensor, " unit"]:
    """Average precision of every column of ``scores`` for the positive ``labels`` (higher score = positive).

    ``AP = sum over distinct score thresholds of (recall step) x (precision at the threshold)``, as
    ``sklearn.metrics.average_precision_score``: tied samples enter together, so a constant column scores the
    positive rate whatever the sample order (GELU gates below about -6 give many exact zeros).
    """
    n_positive = int(labels.sum())
    if n_positive == 0 or n_positive == labels.numel():
        raise NeuronError("average precision needs both positive and negative samples")
    ordered, order = scores.sort(dim=0, descending=True, stable=True)
    hits = labels[order].double()
    n_samples = scores.shape[0]
    ranks = torch.arange(1, n_samples + 1, dtype=torch.float64).unsqueeze(-1)
    precision = hits.cumsum(0) / ranks
    group_end = torch.ones_like(ordered, dtype=torch.bool)
    group_end[:-1] = ordered[:-1] != ordered[1:]
    end_index = torch.where(group_end, torch.arange(n_samples).unsqueeze(-1), n_samples)
    end_of_group = end_index.flip(0).cummin(0).values.flip(0)
    return ((precision.gather(0, end_of_group) * hits).sum(0) / n_positive).float()


def expertise_scores(pooled: Float[Tensor, "sample layer neuron"], labels: Sequence[str], languages: Sequence[str],
                     chunk: int = 4096) -> Float[Tensor, "layer neuron lang"]:
    """AP of every neuron for every language (one-vs-rest over the labelled samples)."""
    if len(labels) != pooled.shape[0]:
        raise NeuronError(f"{len(labels)} labels for {pooled.shape[0]} samples")
    n_layers = pooled.shape[1]
    flat = einops.rearrange(pooled, "sample layer neuron -> sample (layer neuron)")
    columns = []
    for code in languages:
        positive = torch.tensor([label == code for label in labels])
        parts = [average_precision(flat[:, start:start + chunk], positive) for start in range(0, flat.shape[1], chunk)]
        columns.append(torch.cat(parts))
    scores = torch.stack(columns, dim=-1)
    return einops.rearrange(scores, "(layer neuron) lang -> layer neuron lang", layer=n_layers)


def expertise_select(scores: Float[Tensor, "layer neuron lang"], top_n: int, bottom_n: int
                     ) -> tuple[Bool[Tensor, "layer neuron lang"], Bool[Tensor, "layer neuron lang"]]:
    """Per language, the ``top_n`` highest- and ``bottom_n`` lowest-AP neurons, as (top, bottom) masks."""
    n_layers, d_mlp, n_languages = scores.shape
    flat = einops.rearrange(scores, "layer neuron lang -> (layer neuron) lang")
    top = torch.zeros_like(flat, dtype=torch.bool)
    bottom = torch.zeros_like(flat, dtype=torch.bool)
    if top_n:
        top.scatter_(0, flat.topk(min(top_n, flat.shape[0]), dim=0).indices, True)
    if bottom_n:
        bottom.scatter_(0, flat.topk(min(bottom_n, flat.shape[0]), dim=0, largest=False).indices, True)
    shape = "(layer neuron) lang -> layer neuron lang"
    return einops.rearrange(top, shape, layer=n_layers), einops.rearrange(bottom, shape, layer=n_layers)


def expertise(pooled_by_language: dict[str, Float[Tensor, "item layer neuron"]], languages: Sequence[str],
              config: ExpertiseConfig = ExpertiseConfig(), provenance: dict | None = None) -> NeuronMask:
    """AP-expertise neurons: the mask is top-N | bottom-N per language; extras ``top`` and ``bottom``; scores = AP."""
    languages = check_languages(languages)
    if len(languages) < 2:
        raise NeuronError("AP expertise separates languages: give at least two")
    missing = [code for code in languages if code not in pooled_by_language]
    if missing:
        raise NeuronError(f"no pooled activations for {', '.join(missing)}")
    pooled = torch.cat([pooled_by_language[code] for code in languages])
    labels = [code for code in languages for _ in range(pooled_by_language[code].shape[0])]
    scores = expertise_scores(pooled, labels, languages, config.chunk)
    top, bottom = expertise_select(scores, config.top_n, config.bottom_n)
    return NeuronMask(mask=top | bottom, languages=languages, method="expertise", scores=scores,
                      config={"expertise": asdict(config), "response": "act(gate) mean-pooled over a sentence",
                              "n_sentences": {code: int(pooled_by_language[code].shape[0]) for code in languages},
                              **(provenance or {})},
                      extra={"top": top, "bottom": bottom})
