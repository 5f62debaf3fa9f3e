"""Neuron interventions at ``blocks.l.mlp.hook_post`` with the gated-MLP algebra.

``hook_post = act(gate) * up``, so setting act(gate) of unit ``i`` to ``v`` is ``hook_post[..., i] = v * up[..., i]``
with ``up = hook_pre_linear`` of the same forward. A :class:`NeuronIntervention` whose edit needs ``up`` returns
two hooks: a capture on ``blocks.l.mlp.hook_pre_linear`` (which runs first in every forward, prefill or KV-cached
step) and the edit on ``blocks.l.mlp.hook_post``. Edits:

* :class:`SetGate`: ``post_i <- post_i + s * (v_i * up_i - post_i)`` (s = 1 sets act(gate) to v exactly);
* :class:`BoostGate`: ``post_i <- post_i + s * b_i * up_i`` (adds ``b`` to act(gate));
* :class:`Deactivate`: ``post_i <- (1 - s) * post_i`` (s = 1 zeroes the unit, i.e. act(gate) = 0);
* :class:`ClasRescale`: ``h1 = h (1 + beta M_partial)``, ``h2 = h1 (1 - gamma M_specific)``,
  ``h_final = (1 - alpha) h + alpha h2`` with ``alpha`` the strength.

Strength 0 is exactly the identity for every edit. Position rules (:class:`workbench.interventions.PositionRule`)
apply as for every other intervention. Everything plugs into ``workbench.interventions.steering`` and the
evaluation module through ``.hooks(model)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.backends import Model
from workbench.interventions import ALL_POSITIONS, Hook, InterventionError, PositionalHook, PositionRule
from workbench.neurons.gating import require_gated
from workbench.neurons.masks import units_by_layer
from workbench.sites import Site, resolve_site


def _check_units(units: Tensor, n_values: int | None = None) -> None:
    if units.ndim != 1 or units.dtype not in (torch.int64, torch.int32):
        raise InterventionError(f"units must be a 1-d integer tensor, got {units.dtype} of shape {tuple(units.shape)}")
    if n_values is not None and n_values != units.shape[0]:
        raise InterventionError(f"{units.shape[0]} units but {n_values} values")


@dataclass(frozen=True)
class SetGate:
    """Set act(gate) of ``units`` to ``values``: ``post_i + strength * (v_i * up_i - post_i)``."""

    units: Int[Tensor, " n"]
    """Neuron indices within the layer."""
    values: Float[Tensor, " n_values"]
    """act(gate) value per unit (e.g. the target language's mean, P90, P10, or 0)."""
    strength: float = 1.0
    """Interpolation between the identity (0) and setting act(gate) exactly (1)."""
    needs_up = True

    def __post_init__(self) -> None:
        _check_units(self.units, self.values.shape[0])

    def width(self) -> None:
        return None

    def __call__(self, post: Float[Tensor, "*rows d"], up: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        units = self.units.to(post.device)
        current = post[..., units]
        target = self.values.to(post) * up[..., units]
        edited = post.clone()
        edited[..., units] = current + self.strength * (target - current)
        return edited


@dataclass(frozen=True)
class BoostGate:
    """Add ``amounts`` to act(gate) of ``units``: ``post_i + strength * b_i * up_i``."""

    units: Int[Tensor, " n"]
    """Neuron indices within the layer."""
    amounts: Float[Tensor, " n_values"]
    """Added act(gate) per unit."""
    strength: float = 1.0
    """Multiple of ``amounts`` added."""
    needs_up = True

    def __post_init__(self) -> None:
        _check_units(self.units, self.amounts.shape[0])

    def width(self) -> None:
        return None

    def __call__(self, post: Float[Tensor, "*rows d"], up: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        units = self.units.to(post.device)
        edited = post.clone()
        edited[..., units] = post[..., units] + self.strength * self.amounts.to(post) * up[..., units]
        return edited


@dataclass(frozen=True)
class Deactivate:
    """Scale ``units`` by ``1 - strength``: strength 1 zeroes them (act(gate) = 0, Tang et al.'s deactivation)."""

    units: Int[Tensor, " n"]
    """Neuron indices within the layer."""
    strength: float = 1.0
    """Fraction of the units' output removed."""
    needs_up = False

    def __post_init__(self) -> None:
        _check_units(self.units)

    def width(self) -> None:
        return None

    def __call__(self, post: Float[Tensor, "*rows d"], up: Tensor | None = None) -> Float[Tensor, "*rows d"]:
        units = self.units.to(post.device)
        edited = post.clone()
        edited[..., units] = post[..., units] * (1.0 - self.strength)
        return edited


@dataclass(frozen=True)
class ClasRescale:
    """CLAS masked rescaling of ``hook_post``; ``strength`` is the paper's ``alpha`` (may be negative)."""

    partial: Bool[Tensor, " d"]
    """M_partial: partial-shared neurons of the layer (boosted by ``1 + beta``)."""
    specific: Bool[Tensor, " d"]
    """M_specific: language-specific neurons of the layer (scaled by ``1 - gamma``)."""
    strength: float = 1.0
    """alpha: blend ``(1 - alpha) h + alpha h2``; 0 is the identity."""
    beta: float = 0.4
    """Boost of partial-shared neurons (paper default 0.4)."""
    gamma: float = 0.2
    """Suppression of language-specific neurons (paper default 0.2)."""
    needs_up = False

    def __post_init__(self) -> None:
        if self.partial.shape != self.specific.shape or self.partial.ndim != 1:
            raise InterventionError(f"partial {tuple(self.partial.shape)} and specific "
                                    f"{tuple(self.specific.shape)} masks must be 1-d of the same width")

    def width(self) -> int:
        return self.partial.shape[0]

    def __call__(self, post: Float[Tensor, "*rows d"], up: Tensor | None = None) -> Float[Tensor, "*rows d"]:
        boosted = post * (1.0 + self.beta * self.partial.to(post))
        suppressed = boosted * (1.0 - self.gamma * self.specific.to(post))
        return (1.0 - self.strength) * post + self.strength * suppressed


@dataclass
class UpCapture:
    """A hook on ``hook_pre_linear`` keeping the latest ``up`` of its layer (the current forward's)."""

    value: Tensor | None = field(default=None, repr=False)

    def __call__(self, activation: Float[Tensor, "batch pos d"], hook: Any) -> Float[Tensor, "batch pos d"]:
        self.value = activation
        return activation


@dataclass
class _WithUp:
    """An edit bound to the captured ``up`` of its layer: the single-argument edit ``PositionalHook`` expects."""

    edit: Any
    capture: UpCapture

    @property
    def strength(self) -> float:
        return self.edit.strength

    def width(self) -> int | None:
        return self.edit.width()

    def __call__(self, post: Float[Tensor, "batch pos d"]) -> Float[Tensor, "batch pos d"]:
        up = self.capture.value
        if up is None or up.shape != post.shape:
            raise InterventionError("the up projection (hook_pre_linear) of this forward was not captured before "
                                    "hook_post; use NeuronIntervention.hooks(model), which registers both")
        return self.edit(post, up)


@dataclass(frozen=True)
class NeuronIntervention:
    """An edit of MLP neurons of one layer at ``blocks.{layer}.mlp.hook_post``, at the positions ``rule`` selects."""

    layer: int
    """Block index."""
    edit: SetGate | BoostGate | Deactivate | ClasRescale
    """What is done to the layer's neurons."""
    rule: PositionRule = ALL_POSITIONS
    """Where in the sequence."""

    def hooks(self, model: Model) -> list[Hook]:
        """The edit on ``hook_post`` (preceded by a capture of ``hook_pre_linear`` when the edit needs ``up``)."""
        post = resolve_site(model, Site(self.layer, "mlp_post"))
        width = post.width(model)
        if self.edit.width() is not None and self.edit.width() != width:
            raise InterventionError(f"{type(self.edit).__name__} has width {self.edit.width()} but {post.hook_name} "
                                    f"has width {width}")
        units = getattr(self.edit, "units", None)
        if units is not None and units.numel() and (int(units.max()) >= width or int(units.min()) < 0):
            raise InterventionError(f"unit indices must lie in 0..{width - 1} for {post.hook_name}")
        if not self.edit.needs_up:
            return [(post.hook_name, PositionalHook(self.edit, self.rule))]
        require_gated(model)
        up_site = resolve_site(model, Site(self.layer, "mlp_pre_linear"))
        capture = UpCapture()
        return [(up_site.hook_name, capture), (post.hook_name, PositionalHook(_WithUp(self.edit, capture), self.rule))]


# ----------------------------------------------------------------------------------------- builders from masks

def set_gate(selected: Bool[Tensor, "layer neuron"], values: Float[Tensor, "layer neuron"], *, strength: float = 1.0,
             rule: PositionRule = ALL_POSITIONS) -> list[NeuronIntervention]:
    """Set act(gate) of the selected neurons to ``values[layer, neuron]`` (one intervention per layer)."""
    return [NeuronIntervention(layer, SetGate(units, values[layer, units].float(), strength), rule)
            for layer, units in units_by_layer(selected).items()]


def boost_gate(selected: Bool[Tensor, "layer neuron"], amounts: Float[Tensor, "layer neuron"], *,
               strength: float = 1.0, rule: PositionRule = ALL_POSITIONS) -> list[NeuronIntervention]:
    """Add ``strength * amounts[layer, neuron]`` to act(gate) of the selected neurons."""
    return [NeuronIntervention(layer, BoostGate(units, amounts[layer, units].float(), strength), rule)
            for layer, units in units_by_layer(selected).items()]


def deactivate(selected: Bool[Tensor, "layer neuron"], *, strength: float = 1.0,
               rule: PositionRule = ALL_POSITIONS) -> list[NeuronIntervention]:
    """Zero the selected neurons (act(gate) = 0) at every layer that has any."""
    return [NeuronIntervention(layer, Deactivate(units, strength), rule)
            for layer, units in units_by_layer(selected).items()]


def clas_rescale(partial: Bool[Tensor, "layer neuron"], specific: Bool[Tensor, "layer neuron"], layers: Sequence[int],
                 *, alpha: float, beta: float = 0.4, gamma: float = 0.2,
                 rule: PositionRule = ALL_POSITIONS) -> list[NeuronIntervention]:
    """CLAS masked rescaling at each of ``layers``."""
    return [NeuronIntervention(layer, ClasRescale(partial[layer], specific[layer], alpha, beta, gamma), rule)
            for layer in layers]


def rate_matched_units(rates: Float[Tensor, " unit"], units: Sequence[int], generator: torch.Generator,
                       n_nearest: int = 8, exclude: Sequence[int] = ()) -> tuple[int, ...]:
    """For each of ``units``, another unit drawn at random among the ``n_nearest`` (not in ``units`` or
    ``exclude``, not drawn yet) whose rate (firing rate, activation probability) is closest on a log scale: a
    random control that is as active as what it controls for (uniformly drawn units are mostly the quiet ones)."""
    log_rate = torch.log10(rates.double().clamp_min(1e-6))
    taken = {*units, *exclude}
    chosen = []
    for unit in units:
        distance = (log_rate - log_rate[unit]).abs()
        distance[list(taken)] = float("inf")
        nearest = distance.argsort()[:n_nearest]
        nearest = nearest[torch.isfinite(distance[nearest])]
        if not len(nearest):
            raise InterventionError(f"no unit left to match unit {unit}: all {len(rates)} are selected or excluded")
        pick = int(nearest[torch.randint(len(nearest), (1,), generator=generator)])
        chosen.append(pick)
        taken.add(pick)
    return tuple(chosen)


def random_like(selected: Bool[Tensor, "layer neuron"], *, exclude: Bool[Tensor, "layer neuron"] | None = None,
                generator: torch.Generator | None = None, rates: Float[Tensor, "layer neuron"] | None = None,
                n_nearest: int = 8) -> Bool[Tensor, "layer neuron"]:
    """Random neurons with the same count in every layer, drawn from those not in ``exclude`` (default: selected);
    with ``rates``, each one also matched on activation probability (:func:`rate_matched_units`)."""
    exclude = selected if exclude is None else exclude | selected
    result = torch.zeros_like(selected)
    if rates is not None:
        generator = generator or torch.Generator().manual_seed(0)
        for layer in range(selected.shape[0]):
            units = selected[layer].nonzero().flatten().tolist()
            excluded = exclude[layer].nonzero().flatten().tolist()
            result[layer, list(rate_matched_units(rates[layer], units, generator, n_nearest, excluded))] = True
        return result
    for layer, count in enumerate(selected.sum(-1).tolist()):
        pool = (~exclude[layer]).nonzero().flatten()
        if count > pool.numel():
            raise InterventionError(f"layer {layer}: cannot draw {count} random neurons from {pool.numel()}")
        result[layer, pool[torch.randperm(pool.numel(), generator=generator)[:count]]] = True
    return result
