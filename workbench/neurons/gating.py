"""The gate of a gated MLP: its activation function, and act(gate) statistics read from gate histograms.

For a gated MLP ``hook_post = act(gate) * up`` with ``gate = blocks.l.mlp.hook_pre`` and ``up = hook_pre_linear``.
No hook sees act(gate) alone, so the neuron methods harvest the gate pre-activation ``hook_pre`` (its per-unit
histograms) and map it through ``act``:

* ``P(act(gate) > 0) = P(gate > 0)`` for GELU and SiLU gates (LAPE's activity test);
* ``P(act(gate) > act(t)) = P(gate > t)`` for every ``t >= 0`` (both are increasing on x > 0 and negative below);
* the mean and quantiles of act(gate) are computed from the histogram with every bin represented by act of its
  midpoint (outer bins by the unit's exact min / max): exact up to the bin width, and correct where GELU is not
  monotone (x < -0.75).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from workbench.activations import ActivationStats, HarvestConfig
from workbench.backends import Model
from workbench.neurons.masks import NeuronError
from workbench.sites import Site

GATE_STATISTICS: tuple[str, ...] = ("mean", "p90", "p10", "zero")
"""Values an intervention can set act(gate) to (of the target language)."""

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
}


def require_gated(model: Model) -> None:
    """Raise unless ``model`` has a gated MLP (``hook_post = act(gate) * up``)."""
    if not getattr(model.cfg, "gated_mlp", False):
        raise NeuronError(f"model {getattr(model.cfg, 'model_name', '?')} has no gated MLP (cfg.gated_mlp is not "
                          "True): the neuron methods read the gate pre-activation (hook_pre) and the up projection "
                          "(hook_pre_linear) of a gated MLP such as Gemma's, Llama's or Qwen's")


def activation_name(model: Model) -> str:
    """Name of the MLP gate's activation function (``gelu_pytorch_tanh`` for Gemma 3)."""
    name = getattr(model.cfg, "act_fn", None)
    if name not in _ACTIVATIONS:
        raise NeuronError(f"unknown MLP activation function {name!r}; known: {', '.join(_ACTIVATIONS)}")
    return name


def activation_function(name: str) -> Callable[[Tensor], Tensor]:
    """The activation function called ``name`` (a key of the known activations)."""
    if name not in _ACTIVATIONS:
        raise NeuronError(f"unknown MLP activation function {name!r}; known: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def bin_values(config: HarvestConfig, minimum: Float[Tensor, " d"], maximum: Float[Tensor, " d"]
               ) -> Float[Tensor, "d bins"]:
    """A representative value per histogram bin and unit: inner-bin midpoints, outer bins at the unit's min/max."""
    edges = config.bin_edges()
    grid = torch.asinh(edges / config.histogram_scale)
    middles = torch.sinh((grid[:-1] + grid[1:]) / 2) * config.histogram_scale
    inner = middles.float().expand(minimum.shape[0], -1)
    return torch.cat([minimum.unsqueeze(-1), inner, maximum.unsqueeze(-1)], dim=-1)


def histogram_mean(histogram: Int[Tensor, "d bins"], values: Float[Tensor, "d bins"]) -> Float[Tensor, " d"]:
    """Per-unit mean of ``values`` weighted by the bin counts."""
    counts = histogram.double()
    return ((counts * values.double()).sum(-1) / counts.sum(-1).clamp_min(1)).float()


def histogram_value_quantile(histogram: Int[Tensor, "d bins"], values: Float[Tensor, "d bins"], q: float
                             ) -> Float[Tensor, " d"]:
    """Per-unit ``q``-quantile of ``values`` weighted by the bin counts (bins need not be sorted by value)."""
    if not 0.0 <= q <= 1.0:
        raise NeuronError(f"quantile q must be in [0, 1], got {q}")
    order = values.argsort(-1)
    sorted_values = values.gather(-1, order)
    cumulative = histogram.double().gather(-1, order).cumsum(-1)
    total = cumulative[:, -1:]
    if (total == 0).any():
        raise NeuronError("quantile of a unit with no observations")
    index = torch.searchsorted(cumulative, (q * total).clamp_min(0.5)).clamp_(max=values.shape[-1] - 1)
    return sorted_values.gather(-1, index).squeeze(-1)


def gate_statistics(stats_by_language: dict[str, ActivationStats], languages: Sequence[str], layers: Sequence[int],
                    activation: str) -> dict[str, Float[Tensor, "layer neuron lang"]]:
    """Mean, P90 and P10 of act(gate) per (layer, neuron, language) from ``mlp_pre`` histograms, and zeros."""
    act = activation_function(activation)
    tables: dict[str, list[list[Tensor]]] = {name: [] for name in ("mean", "p90", "p10")}
    for layer in layers:
        site = Site(layer, "mlp_pre")
        per_language: dict[str, list[Tensor]] = {name: [] for name in tables}
        for code in languages:
            stats = stats_by_language[code]
            histogram = stats.histogram(site, code)
            values = act(bin_values(stats.config, stats.minimum(site, code), stats.maximum(site, code)))
            per_language["mean"].append(histogram_mean(histogram, values))
            per_language["p90"].append(histogram_value_quantile(histogram, values, 0.9))
            per_language["p10"].append(histogram_value_quantile(histogram, values, 0.1))
        for name in tables:
            tables[name].append(torch.stack(per_language[name], dim=-1))
    result = {name: torch.stack(rows).float() for name, rows in tables.items()}
    result["zero"] = torch.zeros_like(result["mean"])
    return result
