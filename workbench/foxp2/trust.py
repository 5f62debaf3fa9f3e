"""FOXP2's trust region (METHODS section 3): the strength is the largest that keeps every cost within its bound on
the dev split. Bounds: leakage <= 0.08, KL(base || edited) on the utility contexts <= 0.08 nats and in-language NLL
increase <= 0.03 nats/token, each raised to what simply prompting "Answer in L." in L costs when that is more (the
same rule and bounds every tunable method is calibrated under).

The choice itself is :mod:`workbench.calibration`'s ``trust-region`` strategy; this module holds FOXP2's settings
for it (:meth:`workbench.foxp2.config.Foxp2Config.trust_calibration` turns them into a calibration config), the
revision's objective ``J`` and the climb to the bounds that FOXP2's dev choices (window, ``beta``) score J at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class TrustRegionConfig:
    """The strengths tried on dev and the fixed bounds."""

    strengths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
    """Candidate ``lambda`` values, log-spaced (in the method's strength units: with residual-norm units, strength
    1 adds about one median residual norm over the whole window)."""
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


def window_objective(row: dict[str, Any], unsteered: dict[str, Any], bounds: dict[str, float],
                     instability: float) -> float:
    """The revision's objective for a window, from one dev evaluation ``row`` and the unsteered one::

        J = 0.5 (gain dM + gain DEFAULT) - 2 leak_excess - KL_excess - 2 util_excess - 0.05 instability

    gains are differences from ``unsteered``; each excess is how far the cost is above its bound (0 inside);
    ``instability`` is 1 - the window's mean stage II stability."""
    def excess(key: str) -> float:
        return max(0.0, float(row[key]) - bounds[key]) if key in bounds else 0.0

    gain = (float(row["delta_mass"]) - float(unsteered["delta_mass"])
            + float(row["default_rate"]) - float(unsteered["default_rate"]))
    return (0.5 * gain - 2 * excess("leakage_max") - excess("kl") - 2 * excess("nll_delta")
            - 0.05 * instability)


ROW_KEYS: tuple[str, ...] = ("lid_success", "default_rate", "delta_mass", "leakage_max", "kl", "nll_delta",
                             "relevance", "steering_score")
"""Dev evaluation keys kept per evaluated strength."""


def climb_to_bounds(evaluate: Callable[[float], dict[str, Any]], strengths: list[float], unsteered: dict[str, Any],
                    bounds: dict[str, float], *, instability: float = 0.0,
                    report: Callable[[dict[str, Any]], None] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``strengths`` climbed in increasing order until the first setting outside ``bounds`` (``evaluate`` gives a
    strength's dev metrics); returns one row per evaluated strength (the :data:`ROW_KEYS`, ``within_bounds``, J as
    ``objective``, ``point``) and the trust-region point, the strongest row inside (None when the weakest is
    already outside; every row's ``point`` stays False then)."""
    rows: list[dict[str, Any]] = []
    point = None
    for strength in sorted(strengths):
        metrics = evaluate(strength)
        row = {"strength": strength, **{key: float(metrics[key]) for key in ROW_KEYS}}
        row["within_bounds"] = all(row[key] <= limit for key, limit in bounds.items())
        row["objective"] = window_objective(metrics, unsteered, bounds, instability)
        row["point"] = False
        rows.append(row)
        if report is not None:
            report(row)
        if not row["within_bounds"]:
            break
        point = row
    if point is not None:
        point["point"] = True
    return rows, point


def describe_row(row: dict[str, Any]) -> str:
    """One climbed row for progress output: strength, J and the dev keys J reads."""
    return (f"x{row['strength']:g}: J {row['objective']:+.3f} (DEFAULT {row['default_rate']:.2f}, dM "
            f"{row['delta_mass']:+.2f}, KL {row['kl']:.2f}, NLL {row['nll_delta']:+.2f})"
            + ("" if row["within_bounds"] else " (outside bounds)"))
