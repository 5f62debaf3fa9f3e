"""Language mass of next-token distributions.

``M_L`` is the probability a next-token distribution puts on language L's token set; the early-step mass
``dM = mean over the first T generated steps of (M_target - M_source)``. Logits are only ever needed at the
positions that are generated, which generation computes anyway.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor


def language_mass(logits: Float[Tensor, "*batch vocab"], masks: Bool[Tensor, "lang vocab"]
                  ) -> Float[Tensor, "*batch lang"]:
    """Probability mass on each language's token set."""
    probabilities = logits.float().softmax(dim=-1)
    return probabilities @ masks.to(probabilities.device).T.float()


def delta_mass(step_mass: Float[Tensor, "prompt step lang"], target_index: int, source_index: int
               ) -> Float[Tensor, " prompt"]:
    """``dM`` per prompt: mean over the recorded steps of ``M_target - M_source``."""
    return (step_mass[..., target_index] - step_mass[..., source_index]).mean(dim=-1)


def leakage(step_mass: Float[Tensor, "prompt step lang"], base_step_mass: Float[Tensor, "prompt step lang"],
            other_indices: list[int]) -> Float[Tensor, " other"]:
    """Mass gained by each other language (not target, not source), averaged over prompts and steps; >= 0."""
    if not other_indices:
        return torch.zeros(0)
    gain = step_mass[..., other_indices].mean(dim=(0, 1)) - base_step_mass[..., other_indices].mean(dim=(0, 1))
    return gain.clamp_min(0.0)
