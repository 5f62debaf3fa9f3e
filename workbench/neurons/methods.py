"""Neuron steering methods for ``workbench steer`` and the benchmark runner: ``lape`` and ``clas``.

Both prepare their masks on first use through :mod:`workbench.neurons.cache` (store entries keyed by model,
configuration and language set), so later calls are instant.

* ``lape`` (Tang et al.'s steering): the target language's LAPE neurons get act(gate) set to ``strength`` x the
  target language's mean act(gate) (``value``), and the source language's LAPE neurons (not shared with the target)
  are zeroed, at ``hook_post`` of every layer (or only ``layer``). Strength is a multiple of the value, so 1 is
  the paper's setting and 0 deactivates both sets (it is not the identity).
* ``clas``: CLAS masked rescaling at the bridge layers (or only ``layer``); strength is the paper's ``alpha``
  (0 = identity, negative allowed), ``beta`` = 0.4 and ``gamma`` = 0.2. CLAS is not target-specific: its masks
  depend on the language set only (partial-shared neurons boosted, every language-specific neuron suppressed;
  ``specific="source"`` suppresses only the source language's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.backends import Model
from workbench.interventions import ALL_POSITIONS, PositionRule
from workbench.methods import MethodError, Treatment
from workbench.neurons.data import TokenDataConfig
from workbench.neurons.gating import GATE_STATISTICS
from workbench.neurons.interventions import clas_rescale, deactivate, set_gate

DEFAULT_STEERING_LANGUAGES: tuple[str, ...] = ("en", "es", "hi", "zh", "ja", "ru", "ar", "de")


def _run_config(languages: tuple[str, ...], target: str, source: str, tokens: TokenDataConfig) -> Any:
    from workbench.neurons.cache import NeuronRunConfig

    if target == source:
        raise MethodError(f"target and source are both {target!r}")
    extra = tuple(code for code in (source, target) if code not in languages)
    return NeuronRunConfig(languages=languages + extra, tokens=tokens, run_causal=False, compare_methods=False)


def _only_layer(selected: torch.Tensor, layer: int | None) -> torch.Tensor:
    if layer is None:
        return selected
    if not 0 <= layer < selected.shape[0]:
        raise MethodError(f"layer {layer} outside 0..{selected.shape[0] - 1}")
    kept = torch.zeros_like(selected)
    kept[layer] = selected[layer]
    return kept


@dataclass
class LapeSteering:
    """Set the target language's LAPE neurons to (a multiple of) its typical act(gate); zero the source's."""

    languages: tuple[str, ...] = DEFAULT_STEERING_LANGUAGES
    """Language set LAPE compares (target and source are added when missing)."""
    tokens: TokenDataConfig = field(default_factory=TokenDataConfig)
    """Harvest data (the default matches ``workbench neurons lape``, so its cache is shared)."""
    value: str = "mean"
    """act(gate) statistic of the target language the target neurons are set to: mean, p90, p10 or zero."""
    cache_root: str | Path | None = None
    """Store root for the neuron caches (default: the workbench cache, :func:`workbench.store.cache_dir`)."""
    name: str = "lape"
    tunable: bool = True
    default_rule: PositionRule = ALL_POSITIONS

    def __post_init__(self) -> None:
        if self.value not in GATE_STATISTICS:
            raise MethodError(f"value must be one of {', '.join(GATE_STATISTICS)}, got {self.value!r}")

    def layer_grid(self, model: Model) -> list[int | None]:
        return [None]

    def strength_grid(self) -> list[float]:
        return [0.25, 0.5, 1.0, 2.0]

    def fingerprint(self) -> dict[str, Any]:
        from workbench.neurons.lape import LapeConfig

        return {"languages": list(self.languages), "tokens": asdict(self.tokens), "value": self.value,
                "lape": asdict(LapeConfig())}

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        from workbench.neurons.cache import cached_gate_values, cached_mask

        config = _run_config(self.languages, target, source, self.tokens)
        mask = cached_mask("lape", model, config, cache_root=self.cache_root)
        values = cached_gate_values(model, config.languages, config.tokens, cache_root=self.cache_root)
        target_neurons = _only_layer(mask.of(target), layer)
        source_neurons = _only_layer(mask.of(source) & ~mask.of(target), layer)
        if not target_neurons.any() and not source_neurons.any():
            raise MethodError(f"LAPE assigns no neurons to {target!r} or {source!r}"
                              f"{'' if layer is None else f' at layer {layer}'}; nothing to steer")
        target_values = strength * values[self.value][..., mask.index(target)]
        interventions = (*set_gate(target_neurons, target_values, rule=rule), *deactivate(source_neurons, rule=rule))
        n_target, n_source = int(target_neurons.sum()), int(source_neurons.sum())
        return Treatment(
            interventions=interventions,
            description=f"LAPE: act(gate) of {n_target} {target} neurons := {strength:g} x {target} {self.value}; "
                        f"{n_source} {source} neurons zeroed ({'all layers' if layer is None else f'layer {layer}'}, "
                        f"{rule})",
            provenance={"method": "lape", "languages": list(mask.languages), "value": self.value,
                        "n_target_neurons": n_target, "n_source_neurons": n_source, "layer": layer,
                        "mask_config": mask.config.get("lape"), "tokens": asdict(config.tokens),
                        "data": mask.config.get("data")})


@dataclass
class ClasSteering:
    """CLAS masked rescaling of ``hook_post`` at the bridge layers; strength = alpha."""

    languages: tuple[str, ...] = DEFAULT_STEERING_LANGUAGES
    """Language set the categories are computed over (target and source are added when missing)."""
    specific: str = "all"
    """Which language-specific neurons are suppressed: ``all`` (the paper) or ``source``."""
    beta: float = 0.4
    """Boost of partial-shared neurons."""
    gamma: float = 0.2
    """Suppression of language-specific neurons."""
    cache_root: str | Path | None = None
    """Store root for the neuron caches (default: the workbench cache, :func:`workbench.store.cache_dir`)."""
    name: str = "clas"
    tunable: bool = True
    default_rule: PositionRule = ALL_POSITIONS

    def __post_init__(self) -> None:
        if self.specific not in ("all", "source"):
            raise MethodError(f"specific must be 'all' or 'source', got {self.specific!r}")

    def layer_grid(self, model: Model) -> list[int | None]:
        return [None]

    def strength_grid(self) -> list[float]:
        return [-1.0, -0.5, 0.5, 1.0, 2.0]

    def fingerprint(self) -> dict[str, Any]:
        from workbench.neurons.clas import ClasConfig
        from workbench.neurons.data import ParallelDataConfig

        return {"languages": list(self.languages), "specific": self.specific, "beta": self.beta,
                "gamma": self.gamma, "clas": asdict(ClasConfig()), "parallel": asdict(ParallelDataConfig())}

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        from workbench.neurons.cache import cached_mask
        from workbench.neurons.clas import bridge_masks

        config = _run_config(self.languages, target, source, TokenDataConfig())
        mask = cached_mask("clas", model, config, cache_root=self.cache_root)
        layers = mask.config["bridge_layers"] if layer is None else [layer]
        partial, specific = bridge_masks(mask, layers, self.specific, source)
        interventions = tuple(clas_rescale(partial, specific, layers, alpha=strength, beta=self.beta,
                                           gamma=self.gamma, rule=rule))
        return Treatment(
            interventions=interventions,
            description=f"CLAS: alpha={strength:g}, beta={self.beta:g}, gamma={self.gamma:g} at layers {layers} "
                        f"({int(partial.sum())} partial-shared boosted, {int(specific.sum())} language-specific "
                        f"suppressed, {rule})",
            provenance={"method": "clas", "languages": list(mask.languages), "layers": list(layers),
                        "bridge_layers": mask.config["bridge_layers"], "specific": self.specific,
                        "clas_config": mask.config.get("clas"), "parallel": mask.config.get("parallel")})

