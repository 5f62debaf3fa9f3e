"""Pure feature scores (tensors in, tensors out): selectivity, causal lift slope, joint score, LangFIR's filter.

FOXP2 stage I (METHODS section 3), per SAE feature ``j``:

* selectivity ``Sel_j = (mean_tgt - mean_en) / (std_tgt + std_en + 1e-6)`` over parallel pairs (one value per
  sentence: the feature's mean activation over the sentence's tokens; population std);
* lift: ``dM(a)`` = change of next-token ``M_tgt - M_en`` when ``a * natural_j * W_dec[j]`` is added at the
  prompt-final position, averaged over prompts; slope = median over the scales ``a`` of ``dM(a) / a``;
* joint score ``max(Sel, 0) * max(slope, 0)`` for target-promoting features and
  ``max(-Sel, 0) * max(-slope, 0)`` for English-promoting ones.

LangFIR (METHODS section 4): features that fire consistently on target-language text, minus those that also fire
on random-token sequences (the same firing-rate criterion applied to both).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.errors import WorkbenchError


class FeatureError(WorkbenchError):
    """Bad input to a feature analysis (shapes, empty data, an unknown feature or side)."""


def selectivity(target: Float[Tensor, "pair feature"], english: Float[Tensor, "pair feature"], eps: float = 1e-6
                ) -> Float[Tensor, " feature"]:
    """``(mean_tgt - mean_en) / (std_tgt + std_en + eps)`` per feature, over the pairs (population std)."""
    if target.shape[-1] != english.shape[-1] or target.shape[0] < 1 or english.shape[0] < 1:
        raise FeatureError(f"selectivity needs (n, features) tensors with the same feature count, got "
                           f"{tuple(target.shape)} and {tuple(english.shape)}")
    target, english = target.double(), english.double()
    spread = target.std(0, unbiased=False) + english.std(0, unbiased=False) + eps
    return ((target.mean(0) - english.mean(0)) / spread).float()


def lift_slopes(delta_mass: Float[Tensor, "feature scale"], scales: Float[Tensor, " scale"]
                ) -> Float[Tensor, " feature"]:
    """Median over scales of ``delta_mass / scale`` (``delta_mass`` already has the unsteered value subtracted)."""
    if delta_mass.shape[-1] != scales.shape[-1] or (scales == 0).any():
        raise FeatureError("need one non-zero scale per delta_mass column")
    return torch.quantile((delta_mass / scales.to(delta_mass)).double(), 0.5, dim=-1).float()


def joint_scores(selectivity_: Float[Tensor, " feature"], slope: Float[Tensor, " feature"]
                 ) -> tuple[Float[Tensor, " feature"], Float[Tensor, " feature"]]:
    """(target-promoting score, English-promoting score); NaN slopes (not measured) score 0."""
    slope = torch.nan_to_num(slope, nan=0.0)
    target = selectivity_.clamp_min(0) * slope.clamp_min(0)
    english = (-selectivity_).clamp_min(0) * (-slope).clamp_min(0)
    return target, english


def top_positive(scores: Float[Tensor, " feature"], n: int) -> Int[Tensor, " kept"]:
    """Indices of the ``n`` highest strictly positive scores, best first."""
    positive = torch.nonzero(scores > 0).flatten()
    order = scores[positive].argsort(descending=True)
    return positive[order[:n]]


def natural_activation(active_sum: Float[Tensor, " feature"], active_count: Float[Tensor, " feature"]
                       ) -> Float[Tensor, " feature"]:
    """A feature's typical activation when it fires: mean over the tokens where it is non-zero (NaN if never)."""
    natural = active_sum.double() / active_count.double()
    return torch.where(active_count > 0, natural, torch.full_like(natural, float("nan"))).float()


def firing_rate(latents: Float[Tensor, "token feature"]) -> Float[Tensor, " feature"]:
    """Share of tokens on which each feature is non-zero."""
    if latents.shape[0] == 0:
        raise FeatureError("firing_rate of zero tokens")
    return (latents != 0).double().mean(0).float()


def langfir_mask(target_rate: Float[Tensor, " feature"], random_rate: Float[Tensor, " feature"], *,
                 min_target_rate: float, max_random_rate: float) -> Bool[Tensor, " feature"]:
    """LangFIR's survivors: firing on at least ``min_target_rate`` of target tokens and on less than
    ``max_random_rate`` of random-token positions."""
    if not 0 < min_target_rate <= 1 or not 0 <= max_random_rate <= 1:
        raise FeatureError("need 0 < min_target_rate <= 1 and 0 <= max_random_rate <= 1")
    return (target_rate >= min_target_rate) & (random_rate < max_random_rate)
