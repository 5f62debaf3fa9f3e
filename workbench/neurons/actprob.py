"""Activation probability 90p (Mondal et al. 2025), the meaningful version.

For language ``a`` and neuron ``i`` let ``t[i, a]`` be the ``quantile`` (0.9) of the neuron's activation over
``a``'s tokens. As literally coded in the reference, the score ``P_a(x > t[i, a])`` is ~0.10 for every neuron (it
is the definition of the percentile). The meaningful version implemented here asks how much more often the neuron
exceeds ``a``'s own P90 on ``a`` than on the other languages:

    score[i, a] = (1 - quantile) - mean_{b != a} P_b(x > t[i, a])        (in [-0.9, 0.1] for quantile 0.9)

Keep the ``top_rate`` (0.125%) of ``L * d_mlp`` neurons per language with the highest positive scores. The
activation is the gate pre-activation ``hook_pre`` read from its histograms; since act(gate) > act(t) iff
gate > t for every t >= 0 (GELU/SiLU), the exceedances equal those of act(gate) whenever a language's P90 is
positive. A neuron whose P90 gate in language ``a`` is not positive does not fire in ``a`` (act(gate) <= 0 on 90%
of its tokens), so it is never selected for ``a``: its score is set to ``UNFIRED_SCORE``, below every real score
(otherwise a neuron that is silent in ``a`` but even more silent elsewhere would reach the maximum 0.1). Padding
positions are excluded by the harvest (the reference code includes them: a bug).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from workbench.activations import ActivationStats
from workbench.neurons.masks import NeuronError, NeuronMask, check_languages
from workbench.sites import Site

UNFIRED_SCORE = -1.0
"""Score of a neuron in a language where its P90 gate is not positive (below the range [-0.9, 0.1])."""

@dataclass(frozen=True)
class ActProbConfig:
    """Activation-probability-90p selection settings."""

    quantile: float = 0.9
    """Per-language percentile of a neuron's activation used as its threshold."""
    top_rate: float = 0.00125
    """Fraction of all ``L * d_mlp`` neurons kept per language."""
    aggregate: Literal["mean", "max"] = "mean"
    """How the other languages' exceedance probabilities are combined (``max``: the strictest competitor)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise NeuronError(f"quantile must be in (0, 1), got {self.quantile}")
        if not 0.0 < self.top_rate <= 1.0:
            raise NeuronError(f"top_rate must be in (0, 1], got {self.top_rate}")
        if self.aggregate not in ("mean", "max"):
            raise NeuronError(f"aggregate must be 'mean' or 'max', got {self.aggregate!r}")


def exceedance_table(stats_by_language: dict[str, ActivationStats], languages: Sequence[str], quantile: float,
                     kind: str = "mlp_pre"
                     ) -> tuple[Float[Tensor, "layer neuron lang other"], Float[Tensor, "layer neuron lang"]]:
    """``([l, i, a, b] = P_b(x > t[l, i, a]), t)`` with ``t`` language ``a``'s ``quantile``, from histograms."""
    languages = check_languages(languages)
    layers = sorted({site.layer for site in stats_by_language[languages[0]].sites if site.kind == kind})
    if not layers:
        raise NeuronError(f"no {kind} statistics harvested")
    table, own = [], []
    for layer in layers:
        site = Site(layer, kind)
        thresholds = [stats_by_language[a].quantile(site, a, quantile) for a in languages]
        rows = [torch.stack([1.0 - stats_by_language[b].cdf(site, b, threshold) for b in languages], dim=-1)
                for threshold in thresholds]
        table.append(torch.stack(rows, dim=-2))
        own.append(torch.stack(thresholds, dim=-1))
    return torch.stack(table).clamp(0.0, 1.0), torch.stack(own).float()


def actprob_scores(exceedance: Float[Tensor, "layer neuron lang other"], quantile: float = 0.9,
                   aggregate: str = "mean") -> Float[Tensor, "layer neuron lang"]:
    """``(1 - quantile) - aggregate_{b != a} exceedance[..., a, b]`` (needs at least two languages)."""
    n_languages = exceedance.shape[-1]
    if n_languages < 2:
        raise NeuronError("activation probability 90p compares languages: give at least two")
    off_diagonal = ~torch.eye(n_languages, dtype=torch.bool)
    if aggregate == "mean":
        others = (exceedance * off_diagonal).sum(-1) / (n_languages - 1)
    else:
        others = exceedance.masked_fill(~off_diagonal, float("-inf")).amax(-1)
    return (1.0 - quantile) - others


def actprob_select(scores: Float[Tensor, "layer neuron lang"], top_rate: float) -> Bool[Tensor, "layer neuron lang"]:
    """Per language, the ``round(top_rate * L * d_mlp)`` highest-scoring neurons with a positive score."""
    n_layers, d_mlp, n_languages = scores.shape
    n_keep = max(1, round(n_layers * d_mlp * top_rate))
    flat = scores.reshape(n_layers * d_mlp, n_languages)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    top = flat.topk(min(n_keep, flat.shape[0]), dim=0)
    mask.scatter_(0, top.indices, top.values > 0)
    return mask.reshape(n_layers, d_mlp, n_languages)


def activation_probability_90p(stats_by_language: dict[str, ActivationStats], languages: Sequence[str],
                               config: ActProbConfig = ActProbConfig(), provenance: dict | None = None) -> NeuronMask:
    """The 90p neurons from per-language ``mlp_pre`` histograms."""
    languages = check_languages(languages)
    exceedance, thresholds = exceedance_table(stats_by_language, languages, config.quantile)
    scores = actprob_scores(exceedance, config.quantile, config.aggregate)
    scores = torch.where(thresholds > 0, scores, torch.full_like(scores, UNFIRED_SCORE))
    mask = actprob_select(scores, config.top_rate)
    return NeuronMask(mask=mask, languages=languages, method="ap90", scores=scores,
                      config={"ap90": asdict(config), "activation": "gate pre-activation (blocks.l.mlp.hook_pre)",
                              "score": "(1 - quantile) - mean over other languages of P_other(x > own quantile); "
                                       f"{UNFIRED_SCORE} where the own quantile is not positive",
                              **(provenance or {})})
