"""FOXP2 stage III: the signed sparse shift and the plans its controls are built from.

Inside the window, at each layer ``l``::

    h <- h + scale * strength * (v_tgt[l] - beta * sum_{j in N_en} z_j(h) d_j)

``v_tgt[l]`` is the target direction on the layer's rank-r steering subspace (stage II), ``N_en`` the
English-promoting SAE features of the layer's site (stage I), ``z_j(h)`` their activations on the current
``h`` and ``d_j`` their decoder vectors. ``scale`` is the plan's per-layer factor: 1 with raw units (the paper's
form, ``v_tgt`` at its own norm), ``1 / |W|`` with residual-norm units, where ``v_tgt[l]`` is rescaled to the
layer's median residual norm (the revision's ``lambda / |W|``: one unit of strength is the same relative change at
every depth, and the whole window adds about one median residual norm at strength 1, whatever its width). With
``beta = 1`` and ``scale * strength = 1`` the English features' contribution to the reconstruction is removed
exactly (the SAE error term is kept, as in feature ablation).

A :class:`ShiftPlan` holds one :class:`LayerShift` per window layer; the controls are plans too (positive term
only, negative term only, random support of the same size and firing rate, another window, DiffMean at the same
layers), so every variant runs through the same edit and hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.features.steer import decoder_vectors
from workbench.interventions import Intervention, PositionRule
from workbench.neurons.interventions import rate_matched_units as rate_matched_latents


class ShiftError(WorkbenchError):
    """A shift that cannot be built (width mismatch, features out of range, empty plan)."""


@dataclass(frozen=True)
class SignedShift:
    """``h + strength * (target - beta * z_N(h) @ D_N)``: the FOXP2 edit at one site (strength 0 = identity)."""

    target: Float[Tensor, " d"]
    """``v_tgt``: added in full at strength 1 (zeros: negative term only)."""
    sae: Any = None
    """SAELens SAE of the site whose English-promoting latents are read (None: positive term only)."""
    features: Int[Tensor, " n"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    """Indices of the English-promoting latents ``N_en``."""
    beta: float = 1.0
    """Weight of the negative term (1: remove the features' reconstruction contribution at strength 1)."""
    strength: float = 1.0
    """``lambda``: the multiple of the whole shift."""
    outside: Float[Tensor, "k d"] | None = None
    """Activations left unedited (the BOS activation at this site): the SAEs never saw BOS, their latents there are
    meaningless and huge, and BOS is an attention sink rather than a token of any language. Skipping it at every
    layer also keeps BOS equal to its reference at the next layer, so it is recognised there too."""
    decoder: Float[Tensor, "n d"] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        features = torch.as_tensor(self.features, dtype=torch.long).reshape(-1)
        object.__setattr__(self, "features", features)
        if self.sae is None or features.numel() == 0:
            object.__setattr__(self, "features", features[:0])
            object.__setattr__(self, "decoder", torch.zeros(0, self.target.shape[-1], dtype=self.target.dtype))
            return
        if int(self.sae.cfg.d_in) != self.target.shape[-1]:
            raise ShiftError(f"the SAE reads width {self.sae.cfg.d_in} but the target vector has width "
                             f"{self.target.shape[-1]}")
        object.__setattr__(self, "decoder", decoder_vectors(self.sae, features).to(self.target.dtype))

    def width(self) -> int:
        return self.target.shape[-1]

    def negative_term(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        """``sum_j z_j(h) d_j`` over ``N_en`` (zeros without an SAE or features)."""
        if self.decoder.shape[0] == 0:
            return torch.zeros_like(activation)
        with torch.no_grad():
            latents = self.sae.encode(activation.to(self.sae.W_enc.device, self.sae.dtype))
        return latents[..., self.features.to(latents.device)].to(activation) @ self.decoder.to(activation)

    def is_outside(self, activation: Float[Tensor, "*rows d"]) -> Tensor:
        """Which rows equal (to 1e-3 relative) one of the ``outside`` activations."""
        if self.outside is None:
            return torch.zeros(activation.shape[:-1], dtype=torch.bool, device=activation.device)
        reference = self.outside.to(activation)
        distance = (activation.unsqueeze(-2) - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(1e-6)
        return (distance < 1e-3).any(-1)

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        shift = self.target.to(activation) - self.beta * self.negative_term(activation)
        edited = activation + self.strength * shift
        if self.outside is None:
            return edited
        return torch.where(self.is_outside(activation).unsqueeze(-1), activation, edited)


@dataclass(frozen=True)
class LayerShift:
    """What the shift does at one layer."""

    layer: int
    """Block index."""
    site: str
    """Hook name of the edited activation (the SAE's site when there is one)."""
    target: Float[Tensor, " d"]
    """``v_tgt`` at this layer."""
    sae: Any = None
    """The site's SAE (None: no negative term)."""
    features: tuple[int, ...] = ()
    """English-promoting latents of the SAE."""
    outside: Float[Tensor, "k d"] | None = None
    """Activations the shift leaves unedited (BOS at this site; see :class:`SignedShift`)."""


@dataclass(frozen=True)
class ShiftPlan:
    """The per-layer pieces of one FOXP2 variant (the method itself or a control)."""

    name: str
    """``foxp2`` or the control's name."""
    layers: tuple[LayerShift, ...]
    """One entry per edited layer."""
    beta: float = 1.0
    """Weight of the negative term."""
    description: str = ""
    """One line for reports."""
    scale: float = 1.0
    """Per-layer factor on the strength (``1 / |W|`` with residual-norm units, 1 with raw units)."""

    def __post_init__(self) -> None:
        if not self.layers:
            raise ShiftError(f"shift plan {self.name!r} has no layers")

    def interventions(self, strength: float, rule: PositionRule) -> tuple[Intervention, ...]:
        """One :class:`Intervention` per layer, each at ``scale * strength``."""
        return tuple(Intervention(part.site, SignedShift(part.target, part.sae,
                                                         torch.tensor(part.features, dtype=torch.long), self.beta,
                                                         self.scale * strength, part.outside), rule)
                     for part in self.layers)

    @property
    def n_features(self) -> int:
        return sum(len(part.features) for part in self.layers)

    def summary(self) -> dict[str, Any]:
        """Layers, sites, target-vector norms and feature counts (JSON-ready)."""
        return {"name": self.name, "beta": self.beta, "scale": self.scale, "description": self.description,
                "layers": [{"layer": p.layer, "site": p.site, "target_norm": float(p.target.norm()),
                            "n_features": len(p.features), "features": list(p.features),
                            "skips_bos": p.outside is not None} for p in self.layers]}


def positive_only(plan: ShiftPlan) -> ShiftPlan:
    """The control without the negative term (``beta = 0``)."""
    return replace(plan, name="positive-only", beta=0.0,
                   description="only the target-subspace term (no English-feature suppression)")


def negative_only(plan: ShiftPlan) -> ShiftPlan:
    """The control without the positive term (``v_tgt = 0``)."""
    layers = tuple(replace(part, target=torch.zeros_like(part.target)) for part in plan.layers)
    return replace(plan, name="negative-only", layers=layers,
                   description="only the English-feature suppression (no target vector)")


def random_support(plan: ShiftPlan, seed: int = 0, firing_rates: dict[str, list[float] | Tensor] | None = None
                   ) -> ShiftPlan:
    """Same sizes, random support: a random direction with ``v_tgt``'s norm and as many random latents (not
    among the English-promoting ones) at each layer, matched on firing rate where ``firing_rates`` (site ->
    per-latent rate on English text) has the site (:func:`rate_matched_latents`), else drawn uniformly."""
    generator = torch.Generator().manual_seed(seed)
    firing_rates = firing_rates or {}
    layers = []
    for part in plan.layers:
        direction = torch.randn(part.target.shape[-1], generator=generator, dtype=torch.float64)
        target = (direction / direction.norm() * part.target.double().norm()).to(part.target.dtype)
        features: tuple[int, ...] = ()
        if part.sae is not None and part.features and part.site in firing_rates:
            features = rate_matched_latents(torch.as_tensor(firing_rates[part.site]), part.features, generator)
        elif part.sae is not None and part.features:
            pool = torch.tensor([j for j in range(int(part.sae.cfg.d_sae)) if j not in set(part.features)])
            features = tuple(pool[torch.randperm(len(pool), generator=generator)[:len(part.features)]].tolist())
        layers.append(replace(part, target=target, features=features))
    matched = all(part.site in firing_rates for part in plan.layers if part.features)
    return replace(plan, name="random-support", layers=tuple(layers),
                   description="random direction of the same norm and as many random latents"
                               f"{' matched on English firing rate' if matched else ''}, same layers")


def vector_plan(name: str, vectors: dict[int, Float[Tensor, " d"]], site_of: Any, description: str,
                scale: float = 1.0) -> ShiftPlan:
    """A positive-only plan adding ``scale * vectors[layer]`` at ``site_of(layer)`` (e.g. DiffMean at the same
    layers)."""
    layers = tuple(LayerShift(layer, site_of(layer), vector) for layer, vector in sorted(vectors.items()))
    return ShiftPlan(name, layers, beta=0.0, description=description, scale=scale)
