"""LAPE: language activation probability entropy (Tang et al. 2024), as in the authors' ``identify.py``.

``p[l, i, k] = P(gate pre-activation > 0)`` over language k's tokens (``frac_positive`` of ``mlp_pre``; for a
GELU/SiLU gate this is ``P(act(gate) > 0)``). ``q = p / sum_k p``, entropy ``H = -sum_k q log q``. A neuron none of
whose languages has ``p`` above the ``filter_quantile`` of all ``p`` values gets ``H = inf``. The ``top_rate``
lowest-entropy neurons of all ``L * d_mlp`` are kept, each assigned to every language whose ``p`` exceeds the
``bar_quantile`` of all ``p`` values (a kept neuron may belong to several languages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import einops
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from workbench.activations import ActivationStats
from workbench.neurons.masks import NeuronError, NeuronMask, check_languages


@dataclass(frozen=True)
class LapeConfig:
    """LAPE selection settings (defaults as in METHODS.md section 1)."""

    top_rate: float = 0.01
    """Fraction of all ``L * d_mlp`` neurons kept (the lowest-entropy ones)."""
    filter_quantile: float = 0.95
    """Quantile of all activation probabilities a neuron must exceed in some language to be considered."""
    bar_quantile: float = 0.95
    """Quantile of all activation probabilities above which a kept neuron is assigned to a language."""

    def __post_init__(self) -> None:
        if not 0.0 < self.top_rate <= 1.0:
            raise NeuronError(f"top_rate must be in (0, 1], got {self.top_rate}")
        for name in ("filter_quantile", "bar_quantile"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise NeuronError(f"{name} must be in (0, 1), got {value}")


def lape_entropy(probabilities: Float[Tensor, "layer neuron lang"]) -> Float[Tensor, "layer neuron"]:
    """Entropy of each neuron's activation probabilities normalised across languages (0 log 0 = 0)."""
    total = probabilities.sum(-1, keepdim=True)
    normed = torch.where(total > 0, probabilities / total.clamp_min(1e-30), torch.zeros_like(probabilities))
    logs = torch.where(normed > 0, normed.clamp_min(1e-30).log(), torch.zeros_like(normed))
    return -(normed * logs).sum(-1)


def order_statistic(values: Tensor, rate: float) -> float:
    """The ``round(n * rate)``-th smallest of all values (``torch.kthvalue`` as in the reference code)."""
    flat = values.flatten().double()
    k = min(max(round(flat.numel() * rate), 1), flat.numel())
    return float(flat.kthvalue(k).values)


def lape_select(probabilities: Float[Tensor, "layer neuron lang"], config: LapeConfig = LapeConfig()
                ) -> tuple[Bool[Tensor, "layer neuron lang"], Float[Tensor, "layer neuron"], dict[str, float]]:
    """LAPE on activation probabilities: (assignment mask, entropy with filtered neurons at inf, thresholds)."""
    if probabilities.numel() == 0:
        raise NeuronError("no activation probabilities (empty tensor)")
    if not torch.isfinite(probabilities).all() or (probabilities < 0).any() or (probabilities > 1).any():
        raise NeuronError("activation probabilities must be finite and in [0, 1]")
    n_layers, d_mlp, _ = probabilities.shape
    entropy = lape_entropy(probabilities)
    filter_value = order_statistic(probabilities, config.filter_quantile)
    bar = order_statistic(probabilities, config.bar_quantile)
    entropy = torch.where((probabilities > filter_value).any(-1), entropy, torch.full_like(entropy, float("inf")))
    flat_entropy = einops.rearrange(entropy, "layer neuron -> (layer neuron)")
    n_keep = min(round(n_layers * d_mlp * config.top_rate), int(torch.isfinite(flat_entropy).sum()))
    kept = torch.zeros_like(flat_entropy, dtype=torch.bool)
    if n_keep > 0:
        kept[flat_entropy.topk(n_keep, largest=False).indices] = True
    kept = einops.rearrange(kept, "(layer neuron) -> layer neuron", layer=n_layers)
    mask = kept.unsqueeze(-1) & (probabilities > bar)
    return mask, entropy, {"filter_value": filter_value, "bar": bar, "n_kept": float(n_keep)}


def lape(stats_by_language: dict[str, ActivationStats], languages: Sequence[str],
         config: LapeConfig = LapeConfig(), provenance: dict | None = None) -> NeuronMask:
    """LAPE neurons from per-language ``mlp_pre`` statistics (every harvested layer)."""
    languages = check_languages(languages)
    probabilities = stack_language_stat(stats_by_language, languages, "frac_positive", "mlp_pre")
    mask, entropy, thresholds = lape_select(probabilities, config)
    return NeuronMask(mask=mask, languages=languages, method="lape",
                      config={"lape": asdict(config), "thresholds": thresholds,
                              "activity": "gate pre-activation (blocks.l.mlp.hook_pre) > 0", **(provenance or {})},
                      extra={"entropy": entropy, "activation_probability": probabilities})


def stack_language_stat(stats_by_language: dict[str, ActivationStats], languages: Sequence[str], stat: str,
                        kind: str) -> Float[Tensor, "layer unit lang"]:
    """One statistic of one site kind, stacked as (layer, unit, language) from per-language harvests."""
    missing = [code for code in languages if code not in stats_by_language]
    if missing:
        raise NeuronError(f"no statistics for language(s) {', '.join(missing)}; harvested: "
                          f"{', '.join(stats_by_language) or '(none)'}")
    columns = [stats_by_language[code].stack(stat, kind, [code])[..., 0] for code in languages]
    shapes = {tuple(column.shape) for column in columns}
    if len(shapes) != 1:
        raise NeuronError(f"per-language statistics disagree in shape: {sorted(shapes)} (different models or layers)")
    return torch.stack(columns, dim=-1)
