"""FOXP2's ``beta`` (the weight of the English-feature suppression) chosen on dev jointly with ``lambda``.

For each ``beta`` the strengths are climbed in increasing order on the dev prompts until the first one outside the
trust region (every dev evaluation a stored run); that ``beta``'s point is the strongest setting before it. The
``beta`` whose point has the best revision objective ``J`` (:func:`workbench.foxp2.trust.window_objective`: gains in
dM and DEFAULT over the unsteered model, minus any excess over the bounds; the window's instability term is left
out, being the same for every ``beta``) wins; ties go to the smaller ``beta``.
The strength itself is then chosen by the calibration's trust region at that ``beta`` (the same runs, reused).

    search = search_beta(method, model, "hi", "en", runs, bounds, rule=ALL_POSITIONS)
    search.beta, search.frame      # the winner; one row per (beta, lambda) evaluated
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.console import Console

from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.foxp2.trust import climb_to_bounds, describe_row
from workbench.interventions import PositionRule
from workbench.methods import get_method

console = Console(stderr=True)

@dataclass(frozen=True)
class BetaSearchConfig:
    """The weights of the negative term tried on dev."""

    betas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """Candidate ``beta`` values (0: the target term alone)."""

    def __post_init__(self) -> None:
        if not self.betas or min(self.betas) < 0:
            raise WorkbenchError(f"beta candidates must be a non-empty tuple of values >= 0, got {self.betas}")


@dataclass
class BetaSearch:
    """Every (beta, lambda) evaluated and the winner."""

    beta: float
    strength: float | None
    """The winner's trust-region point (None when no beta had a strength within the bounds)."""
    frame: pd.DataFrame
    """One row per evaluation: beta, strength, the dev keys, within_bounds, J, and whether it is its beta's point."""

    def choices(self) -> dict[str, Any]:
        """What the method is rebuilt with (JSON-ready), with the search itself for the report."""
        return {"beta": self.beta, "beta_search": self.frame.to_dict(orient="records")}


def search_beta(method: Any, model: Model, target: str, source: str, runs: Any, bounds: dict[str, float], *,
                rule: PositionRule, config: BetaSearchConfig = BetaSearchConfig(), progress: bool = True
                ) -> BetaSearch:
    """``beta`` for ``method`` (a :class:`workbench.foxp2.method.Foxp2Method` with its window fixed) by the best
    J among each beta's trust-region point on ``runs`` (the dev prompts); ``bounds`` as the calibration's."""
    unsteered, _ = runs.run_method(get_method("none"), layer=None, strength=0.0, rule=rule)
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for beta in config.betas:
        candidate = method.with_choices({"beta": beta})
        climbed, point = climb_to_bounds(
            lambda strength, candidate=candidate: runs.run_method(candidate, layer=None, strength=strength,
                                                                  rule=rule)[0],
            method.strength_grid(), unsteered, bounds,
            report=(lambda row, beta=beta: console.print(f"  beta {beta:g} {describe_row(row)}")) if progress
            else None)
        rows += [{"beta": beta, **row} for row in climbed]
        if point is not None:
            points.append({"beta": beta, **point})
    if not points:
        if progress:
            console.print(f"[yellow]no beta had a strength within the bounds {bounds}; keeping beta "
                          f"{method.config.beta:g}[/yellow]")
        return BetaSearch(method.config.beta, None, pd.DataFrame(rows))
    best = max(points, key=lambda row: (row["objective"], -row["beta"]))
    return BetaSearch(best["beta"], best["strength"], pd.DataFrame(rows))
