"""SAE feature interventions implementing the ``Steer`` protocol (``.hooks(model)``), with position rules.

* :class:`FeatureSteer`: ``h + scale * d_j`` with ``d_j`` the feature's decoder vector (what one unit of its
  activation writes: ``decode(e_j) - decode(0)``);
* :class:`LatentShift`: shift all latents by a vector (clipped at 0), keeping the SAE error term (SAE-DiffMean);
* :class:`FeatureAblation`: set the feature's latent to 0 (``zero``) or to ``value`` (``clamp``) *keeping the
  SAE error term*: ``h + decode(z') - decode(z)``, never ``h`` replaced by its reconstruction; or remove the
  component of ``h`` along ``d_j`` (``direction``, LangFIR's directional ablation, no encoder involved).

Each is a TL hook through :class:`workbench.interventions.PositionalHook`, so ``PositionRule`` (all positions,
the prompt-final position, + the first k generated steps) works under the KV cache, and strength 0 is exactly the
identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.backends import Model
from workbench.features.scores import FeatureError
from workbench.interventions import ALL_POSITIONS, AblateDirection, Hook, PositionalHook, PositionRule
from workbench.saes.io import check_sae_fits, sae_hook_name

ABLATION_MODES: tuple[str, ...] = ("zero", "clamp", "direction")


def _check_feature(sae: Any, feature: int) -> int:
    if not 0 <= int(feature) < sae.cfg.d_sae:
        raise FeatureError(f"feature {feature} is out of range: the SAE at {sae_hook_name(sae)} has "
                           f"{sae.cfg.d_sae} features (0..{sae.cfg.d_sae - 1})")
    return int(feature)


def decoder_vectors(sae: Any, features: Sequence[int] | Tensor | None = None) -> Float[Tensor, "feature d_in"]:
    """What one unit of each feature's activation adds to the reconstruction: ``decode(e_j) - decode(0)``.

    Only the rows of ``features`` (default: all) are decoded, so a few rows of a wide SAE stay cheap.
    """
    chosen = torch.arange(sae.cfg.d_sae) if features is None else torch.as_tensor(list(features), dtype=torch.long)
    if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= sae.cfg.d_sae):
        raise FeatureError(f"feature indices must lie in 0..{sae.cfg.d_sae - 1} for the SAE at {sae_hook_name(sae)}")
    with torch.no_grad():
        units = torch.zeros(chosen.numel(), sae.cfg.d_sae, dtype=sae.W_dec.dtype, device=sae.W_dec.device)
        units[torch.arange(chosen.numel()), chosen.to(units.device)] = 1.0
        return (sae.decode(units) - sae.decode(torch.zeros_like(units[:1]))).detach()


def decoder_vector(sae: Any, feature: int) -> Float[Tensor, " d_in"]:
    """Decoder vector of one feature (see :func:`decoder_vectors`)."""
    return decoder_vectors(sae, [_check_feature(sae, feature)])[0]


def encoder_directions(sae: Any) -> tuple[Float[Tensor, "d_in feature"], Float[Tensor, " feature"]]:
    """``(E, c)`` with the feature pre-activations ``x @ E + c`` (linear in the site activation ``x``).

    Covers SAELens' affine encoders: ``((x - b_dec) @ W_enc + b_enc)``, times ``||W_dec[j]||`` for TopK SAEs
    that rescale by decoder norm. The activation is a monotone function of it (ReLU, TopK, JumpReLU).
    """
    with torch.no_grad():
        scale = torch.ones(sae.cfg.d_sae, dtype=sae.W_enc.dtype, device=sae.W_enc.device)
        if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
            scale = sae.W_dec.norm(dim=-1)
        b_enc = getattr(sae, "b_enc", None)
        bias = torch.zeros_like(scale) if b_enc is None else b_enc.detach().clone()
        if sae.cfg.apply_b_dec_to_input:
            bias = bias - sae.b_dec @ sae.W_enc
        return (sae.W_enc * scale).detach(), (bias * scale).detach()


def with_edited_latents(sae: Any, activation: Float[Tensor, "*rows d"], edit: Callable[[Tensor], Tensor]
                        ) -> Float[Tensor, "*rows d"]:
    """``h + decode(edit(z)) - decode(z)`` with ``z = encode(h)``: a latent edit that keeps the SAE error term."""
    with torch.no_grad():
        latents = sae.encode(activation.to(sae.W_enc.device, sae.dtype))
        change = sae.decode(edit(latents)) - sae.decode(latents)
    return activation + change.to(activation)


@dataclass(frozen=True)
class LatentEdit:
    """An edit of one SAE latent that keeps the SAE error term: ``h + strength * (decode(z') - decode(z))``."""

    sae: Any
    """The SAELens SAE of the site."""
    feature: int
    """Latent index."""
    value: float = 0.0
    """The latent's new value (0 ablates it)."""
    strength: float = 1.0
    """Interpolation between the identity (0) and the full edit (1)."""

    def width(self) -> int:
        return int(self.sae.cfg.d_in)

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        def edit(latents: Tensor) -> Tensor:
            edited = latents.clone()
            current = latents[..., self.feature]
            edited[..., self.feature] = current + self.strength * (self.value - current)
            return edited

        return with_edited_latents(self.sae, activation, edit)


@dataclass(frozen=True)
class LatentShift:
    """Shift every SAE latent by ``strength * delta``, clipped at 0 (latents are non-negative), keeping the SAE
    error term: ``h + decode(max(z + strength * delta, 0)) - decode(z)`` (CLaS-Bench's SAE-DiffMean edit)."""

    sae: Any
    """The SAELens SAE of the site."""
    delta: Float[Tensor, " feature"]
    """The latent shift at strength 1 (e.g. target-language minus source-language mean latents)."""
    strength: float = 1.0
    """Multiple of ``delta``; 0 is the identity."""

    def width(self) -> int:
        return int(self.sae.cfg.d_in)

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        if self.strength == 0:
            return activation
        return with_edited_latents(self.sae, activation,
                                   lambda latents: (latents + self.strength * self.delta.to(latents)).clamp_min(0))


@dataclass(frozen=True)
class FeatureSteer:
    """Add ``scale * d_j`` (the feature's decoder vector) at the SAE's site, at the positions ``rule`` selects."""

    sae: Any
    """The SAELens SAE whose feature is added (its hook is the site)."""
    feature: int
    """Feature index."""
    scale: float = 1.0
    """Multiple of the decoder vector added, in units of the feature's activation."""
    rule: PositionRule = ALL_POSITIONS
    """Where in the sequence."""

    def __post_init__(self) -> None:
        _check_feature(self.sae, self.feature)

    def hooks(self, model: Model) -> list[Hook]:
        from workbench.interventions import AddVector

        site = check_sae_fits(self.sae, model)
        edit = AddVector(decoder_vector(self.sae, self.feature), self.scale)
        return [(site.hook_name, PositionalHook(edit, self.rule))]


@dataclass(frozen=True)
class FeatureAblation:
    """Ablate (``zero``), clamp (``clamp`` to ``value``) or directionally ablate (``direction``) one feature,
    keeping the SAE error term."""

    sae: Any
    """The SAELens SAE of the site."""
    feature: int
    """Feature index."""
    mode: str = "zero"
    """``zero``: latent -> 0; ``clamp``: latent -> ``value``; ``direction``: remove the component along d_j."""
    value: float = 0.0
    """The clamped latent value (``clamp`` only)."""
    rule: PositionRule = ALL_POSITIONS
    """Where in the sequence."""
    strength: float = 1.0
    """Interpolation between the identity (0) and the full edit (1)."""

    def __post_init__(self) -> None:
        _check_feature(self.sae, self.feature)
        if self.mode not in ABLATION_MODES:
            raise FeatureError(f"unknown ablation mode {self.mode!r}; choose one of {', '.join(ABLATION_MODES)}")

    def edit(self) -> Any:
        if self.mode == "direction":
            return AblateDirection(decoder_vector(self.sae, self.feature), self.strength)
        value = self.value if self.mode == "clamp" else 0.0
        return LatentEdit(self.sae, self.feature, value, self.strength)

    def hooks(self, model: Model) -> list[Hook]:
        site = check_sae_fits(self.sae, model)
        return [(site.hook_name, PositionalHook(self.edit(), self.rule))]
