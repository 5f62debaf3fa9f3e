"""FOXP2's window chosen on dev by the revision's objective ``J`` (:func:`workbench.foxp2.trust.window_objective`).

Candidates: each stage II score's window (Fisher ratio, centred mass excess, the paper-literal mass x stability)
and every contiguous run of ``widths`` layers starting every ``stride`` layers. Each candidate is evaluated on the
dev prompts with the positive term only (``v_tgt`` at the candidate's layers): the negative term needs stage I's
SAEs at the candidate's layers, and training them for every candidate would cost more than the whole search, so
stage I runs once, at the winner.

A candidate's J is read at its trust-region point, as ``beta``'s is (:func:`workbench.foxp2.trust.climb_to_bounds`:
the method's strengths climbed until the first outside the bounds, the strongest inside kept; a candidate outside
them already at the weakest strength is scored there, excess included). At one fixed strength every candidate can
sit far outside the bounds (Hindi at lambda = 1: dev KL 4.4-20 nats against a bound of 0.24), and J then ranks the
windows by how much damage they do rather than by how much control they buy at an admissible cost.
``WindowSearchConfig.strength`` keeps the fixed-strength form (one evaluation per candidate). Every dev evaluation
is a stored run, so a repeated search (another variant, a resumed benchmark) costs nothing.

    search = search_window(method, model, "hi", "en", runs, bounds, rule=ALL_POSITIONS)
    search.window, search.frame      # the winner; one row per evaluated (candidate, strength) with its J
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from rich.console import Console

from workbench.backends import Model
from workbench.foxp2.trust import climb_to_bounds, describe_row
from workbench.interventions import PositionRule
from workbench.methods import get_method

console = Console(stderr=True)


@dataclass(frozen=True)
class WindowSearchConfig:
    """Which windows are tried on dev, and at which strength."""

    widths: tuple[int, ...] = (3, 5, 8)
    """Widths of the coarse grid of contiguous runs."""
    stride: int = 3
    """Start layers of the grid: 0, stride, 2 stride, ..."""
    grid: bool = True
    """Try the coarse grid besides stage II's windows (False: stage II's windows only)."""
    strength: float | None = None
    """None: each candidate at its trust-region point over the method's strengths; a number: every candidate at
    that one strength (residual-norm units: 1 adds about one median residual norm over the window)."""


@dataclass
class WindowSearch:
    """The candidates' dev rows and the winner."""

    window: tuple[int, int]
    frame: pd.DataFrame
    """One row per evaluated (candidate, strength): first, last, origin (the stage II score or ``grid``), strength,
    the dev keys, instability, J, within_bounds and ``point`` (the row the candidate is scored by)."""
    unsteered: dict[str, float] = field(default_factory=dict)

    def choices(self) -> dict[str, Any]:
        """What the method is rebuilt with (JSON-ready), with the search itself for the report."""
        return {"window": list(self.window), "window_search": self.frame.to_dict(orient="records")}


def candidate_windows(stage_windows: dict[str, tuple[int, int]], n_layers: int,
                      config: WindowSearchConfig = WindowSearchConfig()) -> dict[tuple[int, int], str]:
    """Candidate window -> where it came from (stage II scores first; a grid run equal to one keeps the score's
    name)."""
    candidates = {tuple(window): name for name, window in stage_windows.items()}
    if config.grid:
        for width in config.widths:
            for first in range(0, n_layers - width + 1, config.stride):
                candidates.setdefault((first, first + width - 1), "grid")
    return candidates


def search_window(method: Any, model: Model, target: str, source: str, runs: Any, bounds: dict[str, float], *,
                  rule: PositionRule, config: WindowSearchConfig = WindowSearchConfig(), progress: bool = True
                  ) -> WindowSearch:
    """Every candidate window of ``method`` (a :class:`workbench.foxp2.method.Foxp2Method`) evaluated on ``runs``
    (the dev prompts' :class:`workbench.evaluation.runs.EvaluationRuns`) with the positive term only, each scored at
    its trust-region point (or at ``config.strength``); the best J wins (ties: the narrower, then the earlier
    window)."""
    spectral = method.spectral(model, target, source)
    stability = spectral.frame["stability"]
    unsteered, _ = runs.run_method(get_method("none"), layer=None, strength=0.0, rule=rule)
    probe = method.variant_of("positive-only")
    strengths = method.strength_grid() if config.strength is None else [config.strength]
    rows: list[dict[str, Any]] = []
    for (first, last), origin in candidate_windows(spectral.windows(), model.cfg.n_layers, config).items():
        candidate = replace(probe, config=replace(probe.config, window=(first, last)))
        instability = 1.0 - float(stability[first:last + 1].mean())
        climbed, point = climb_to_bounds(
            lambda strength, candidate=candidate: runs.run_method(candidate, layer=None, strength=strength,
                                                                  rule=rule)[0],
            strengths, unsteered, bounds, instability=instability)
        scored = point or climbed[0]
        scored["point"] = True
        rows += [{"first": first, "last": last, "origin": origin, "instability": instability, **row}
                 for row in climbed]
        if progress:
            console.print(f"  window {first}-{last} ({origin}) {describe_row(scored)}"
                          + ("" if len(climbed) == 1 else f" [{len(climbed)} strengths tried]"))
    frame = pd.DataFrame(rows)
    points = [row for row in rows if row["point"]]
    best = max(points, key=lambda r: (r["objective"], -(r["last"] - r["first"]), -r["first"]))
    return WindowSearch((best["first"], best["last"]), frame,
                        {key: float(unsteered[key]) for key in ("delta_mass", "default_rate")})
