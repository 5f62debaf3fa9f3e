"""Test-time interventions of the transfer study, applied while the model reads target-language input.

Names (:func:`intervention_names`):

* ``none`` -- the unmodified model;
* ``clas`` -- CLAS masked rescaling at the bridge layers (Wang et al. categories; ``alpha`` chosen on dev);
* ``<neurons>-<value>`` with ``neurons`` in ``lape`` / ``ap90`` and ``value`` in ``mean`` / ``p90`` / ``p10`` /
  ``zero`` -- Mondal et al.'s interventions: act(gate) of the target language's neurons set to that statistic of
  the target language's act(gate) (``zero`` deactivates them), at every position;
* ``random-<neurons>-<value>`` -- the same on random neurons, as many per layer as the target has, each drawn
  among the 8 unselected neurons of its layer nearest in the target language's activation probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.interventions import Steer
from workbench.neurons.cache import (
    DEFAULT_LANGUAGES,
    NeuronRunConfig,
    cached_gate_values,
    cached_mask,
    language_statistics,
)
from workbench.neurons.clas import bridge_masks
from workbench.neurons.data import ParallelDataConfig, TokenDataConfig
from workbench.neurons.gating import GATE_STATISTICS
from workbench.neurons.interventions import clas_rescale, deactivate, random_like, set_gate
from workbench.sites import Site

__all__ = ["NEURON_SETS", "InterventionPlan", "TransferInterventionConfig", "UnknownInterventionError",
           "build_intervention", "intervention_names"]

NEURON_SETS: tuple[str, ...] = ("lape", "ap90")
"""Neuron identification methods whose target-language neurons are intervened on."""


class UnknownInterventionError(WorkbenchError):
    """An intervention name the transfer study does not know."""


def intervention_names() -> list[str]:
    """Every intervention name, in report order."""
    names = ["none", "clas"]
    for prefix in ("", "random-"):
        names += [f"{prefix}{neurons}-{value}" for neurons in NEURON_SETS for value in GATE_STATISTICS]
    return names


@dataclass(frozen=True)
class TransferInterventionConfig:
    """Where the neurons and their statistics come from."""

    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    """Language set LAPE, 90p and CLAS compare (the target is added when missing)."""
    tokens: TokenDataConfig = field(default_factory=TokenDataConfig)
    """Monolingual text of the neuron statistics (the default shares ``workbench neurons``' cache)."""
    parallel: ParallelDataConfig = field(default_factory=ParallelDataConfig)
    """Parallel items of CLAS's categories and bridge layers (the default shares ``workbench neurons``' cache)."""
    clas_alphas: tuple[float, ...] = (-0.5, -0.25, 0.25, 0.5, 1.0)
    """CLAS alpha grid searched on dev (the paper tunes alpha per task; it may be negative)."""
    seed: int = 0
    """Seed of the random-neuron controls."""
    cache_root: str | Path | None = None
    """Store root of the neuron caches (default: the workbench cache)."""

    def run_config(self, target: str) -> NeuronRunConfig:
        languages = self.languages if target in self.languages else (*self.languages, target)
        return NeuronRunConfig(languages=languages, tokens=self.tokens, parallel=self.parallel, run_causal=False,
                               compare_methods=False)


@dataclass(frozen=True)
class InterventionPlan:
    """One intervention, ready to hook."""

    name: str
    """Its name (:func:`intervention_names`)."""
    interventions: tuple[Steer, ...]
    """What is hooked (empty for ``none``)."""
    n_neurons: int
    """Neurons it touches (CLAS: partial-shared plus language-specific at the bridge layers)."""
    description: str
    """One line for reports."""


def _check_name(name: str) -> None:
    if name not in intervention_names():
        raise UnknownInterventionError(f"unknown transfer intervention {name!r}; known: "
                                       f"{', '.join(intervention_names())}")


def build_intervention(model: Model, name: str, target: str, config: TransferInterventionConfig = (
        TransferInterventionConfig()), *, alpha: float = 0.0, progress: bool = True) -> InterventionPlan:
    """The intervention ``name`` on ``target``-language input (``alpha``: CLAS only)."""
    _check_name(name)
    if name == "none":
        return InterventionPlan(name, (), 0, "no intervention")
    run = config.run_config(target)
    if name == "clas":
        mask = cached_mask("clas", model, run, cache_root=config.cache_root, progress=progress)
        layers = list(mask.config["bridge_layers"])
        partial, specific = bridge_masks(mask, layers)
        return InterventionPlan(name, tuple(clas_rescale(partial, specific, layers, alpha=alpha)),
                                int(partial.sum() + specific.sum()),
                                f"CLAS alpha={alpha:g} at bridge layers {layers}")
    random = name.startswith("random-")
    neurons, value = name.removeprefix("random-").split("-")
    mask = cached_mask(neurons, model, run, cache_root=config.cache_root, progress=progress)
    selected = mask.of(target)
    if random:
        stats = language_statistics(model, run.languages, run.tokens, cache_root=config.cache_root,
                                    progress=progress)[target]
        rates = torch.stack([stats.frac_positive(Site(layer, "mlp_pre"), target) for layer in range(selected.shape[0])])
        selected = random_like(selected, exclude=mask.union(), rates=rates,
                               generator=torch.Generator().manual_seed(config.seed))
    count = int(selected.sum())
    where = f"{count} {'random' if random else neurons} neurons of {target}"
    if value == "zero":
        return InterventionPlan(name, tuple(deactivate(selected)), count, f"{where} zeroed")
    values = cached_gate_values(model, run.languages, run.tokens, cache_root=config.cache_root,
                                progress=progress)[value][..., run.languages.index(target)]
    return InterventionPlan(name, tuple(set_gate(selected, values)), count,
                            f"act(gate) of {where} := {target} {value}")

