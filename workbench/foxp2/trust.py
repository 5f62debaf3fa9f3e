"""FOXP2's trust region: the strength is the largest that keeps every cost within its bound on the dev split.

Bounds (METHODS section 3): leakage <= 0.08, KL(base || edited) on committed contexts <= 0.08 nats and in-language
NLL increase <= 0.03 nats/token, each raised to what simply prompting "Answer in L." costs when that is more.
These are pure functions over sweep rows (dicts with ``strength``, ``leakage_max``, ``kl``, ``nll_delta``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError

COSTS: tuple[str, ...] = ("leakage_max", "kl", "nll_delta")
"""The metrics the trust region bounds (keys of the evaluation's metrics)."""


@dataclass(frozen=True)
class TrustRegionConfig:
    """The strengths tried on dev and the fixed bounds."""

    strengths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
    """Candidate ``lambda`` values (multiples of the whole shift)."""
    max_leakage: float = 0.08
    """Bound on the increase of mass on the other languages' token sets (``leakage_max``)."""
    max_kl: float = 0.08
    """Bound on KL(base || edited) on committed contexts, nats."""
    max_nll_delta: float = 0.03
    """Bound on the in-language NLL increase on reference text, nats/token."""
    relative_to_prompting: bool = True
    """Raise each bound to the prompting baseline's cost when that is larger."""

    def __post_init__(self) -> None:
        if not self.strengths or min(self.strengths) <= 0:
            raise WorkbenchError(f"trust-region strengths must be positive, got {self.strengths}")
        if min(self.max_leakage, self.max_kl, self.max_nll_delta) < 0:
            raise WorkbenchError("trust-region bounds must be >= 0")


def bounds(config: TrustRegionConfig, prompting: dict[str, Any] | None = None) -> dict[str, float]:
    """Each cost's bound: the fixed value, or the prompting baseline's cost when that is larger."""
    fixed = {"leakage_max": config.max_leakage, "kl": config.max_kl, "nll_delta": config.max_nll_delta}
    if prompting is None or not config.relative_to_prompting:
        return fixed
    return {key: max(value, float(prompting[key])) for key, value in fixed.items()}


def within(row: dict[str, Any], limits: dict[str, float]) -> bool:
    """Whether every bounded cost of ``row`` is within its limit."""
    return all(float(row[key]) <= limit for key, limit in limits.items())


def choose_strength(rows: Sequence[dict[str, Any]], limits: dict[str, float]) -> tuple[dict[str, Any], bool]:
    """The row with the largest strength within ``limits``; when none is, the smallest strength, flagged False."""
    if not rows:
        raise WorkbenchError("no trust-region sweep rows to choose from")
    inside = [row for row in rows if within(row, limits)]
    if inside:
        return max(inside, key=lambda row: row["strength"]), True
    return min(rows, key=lambda row: row["strength"]), False
