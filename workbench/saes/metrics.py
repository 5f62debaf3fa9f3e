"""Pure SAE quality metrics: fraction of variance unexplained, L0, dead latents, CE-loss recovered."""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.saes.config import SAEError


def fvu(x: Float[Tensor, "token d"], x_hat: Float[Tensor, "token d"]) -> float:
    """Fraction of variance unexplained: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` (float64 sums)."""
    if x.shape != x_hat.shape or x.shape[0] < 2:
        raise SAEError(f"fvu needs two equal-shaped (>= 2 tokens, d) tensors, got {tuple(x.shape)} and "
                       f"{tuple(x_hat.shape)}")
    x64, x_hat64 = x.double(), x_hat.double()
    residual = (x64 - x_hat64).pow(2).sum()
    total = (x64 - x64.mean(0)).pow(2).sum()
    if total == 0:
        raise SAEError("fvu is undefined for constant activations")
    return float(residual / total)


def reconstruction_metrics(x: Float[Tensor, "token d"], x_hat: Float[Tensor, "token d"],
                           latents: Float[Tensor, "token d_sae"]) -> dict[str, Any]:
    """FVU, mean L0 (active latents per token), dead-latent share (never active on these tokens), and the
    per-token cosine similarity of reconstructions."""
    active = latents != 0
    cosine = torch.nn.functional.cosine_similarity(x.double(), x_hat.double(), dim=-1)
    return {
        "fvu": fvu(x, x_hat),
        "l0": float(active.sum(-1).double().mean()),
        "dead_share": float((~active.any(0)).double().mean()),
        "cosine_mean": float(cosine.mean()),
        "n_tokens": int(x.shape[0]),
    }


def grouped_fvu(x: Float[Tensor, "token d"], x_hat: Float[Tensor, "token d"], labels: Int[Tensor, " token"],
                groups: list[str]) -> dict[str, float]:
    """FVU within each group (language) of tokens, each against its own group mean."""
    result = {}
    for index, group in enumerate(groups):
        rows = labels == index
        if int(rows.sum()) >= 2:
            result[group] = fvu(x[rows], x_hat[rows])
    return result


def ce_recovered(ce_clean: float, ce_spliced: float, ce_ablated: float) -> float:
    """``(CE_ablated - CE_spliced) / (CE_ablated - CE_clean)``: 1 = the splice costs nothing, 0 = as bad as
    ablating the site. NaN when ablating the site does not raise the loss."""
    gap = ce_ablated - ce_clean
    if not math.isfinite(gap) or gap <= 0:
        return float("nan")
    return (ce_ablated - ce_spliced) / gap


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN/inf)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
