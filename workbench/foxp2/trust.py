"""FOXP2's trust region (METHODS section 3): the strength is the largest that keeps every cost within its bound on
the dev split. Bounds: leakage <= 0.08, KL(base || edited) on the utility contexts <= 0.08 nats and in-language NLL
increase <= 0.03 nats/token, each raised to what simply prompting "Answer in L." in L costs when that is more (the
same rule and bounds every tunable method is calibrated under).

The choice itself is :mod:`workbench.calibration`'s ``trust-region`` strategy; this module holds FOXP2's settings
for it (:meth:`workbench.foxp2.config.Foxp2Config.trust_calibration` turns them into a calibration config).
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class TrustRegionConfig:
    """The strengths tried on dev and the fixed bounds."""

    strengths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
    """Candidate ``lambda`` values (multiples of the whole shift)."""
    max_leakage: float = 0.08
    """Bound on the increase of mass on the other languages' token sets (``leakage_max``)."""
    max_kl: float = 0.08
    """Bound on KL(base || edited) on the utility contexts, nats."""
    max_nll_delta: float = 0.03
    """Bound on the in-language NLL increase on reference text, nats/token."""
    bounds_from: str | None = "prompt-native"
    """Registered method whose dev costs raise each bound when larger (native prompting); None: fixed bounds."""

    def __post_init__(self) -> None:
        if not self.strengths or min(self.strengths) <= 0:
            raise WorkbenchError(f"trust-region strengths must be positive, got {self.strengths}")
        if min(self.max_leakage, self.max_kl, self.max_nll_delta) < 0:
            raise WorkbenchError("trust-region bounds must be >= 0")
