"""Calibration: choose a method's layer and strength on the dev split, never on eval, by one rule for every method.

The sweep: every candidate layer at the reference strength, the layer with the best dev steering score kept (ties:
the higher LID success, then the larger early-step mass gain dM, then the smaller KL: where nothing switches yet,
the layer that moves the next-token mass most), then every candidate strength at that layer. Each row is the dev
frontier point of one setting (LID, DEFAULT, relevance, KL, NLL, leakage). The bounds: leakage, KL and in-language
NLL increase (``max_leakage``, ``max_kl``, ``max_nll_delta``), each raised to what ``bounds_from`` (native
prompting, "Answer in L." written in L) costs on the same dev prompts when that is larger; set once per target.

* ``trust-region`` (the default, METHODS section 3, used for every tunable method so their budgets are equal):
  the largest strength at the kept layer whose dev costs all stay within the bounds. When none is, the least
  damaging strength there (smallest NLL increase) is returned and flagged.
* ``grid`` (exploration): the setting of the sweep with the best dev steering score within the bounds (ties: higher
  LID, then the weaker edit); when none is, the least damaging one (smallest NLL increase), flagged.

Every dev evaluation is a ``runs`` entry of the store (an interrupted sweep resumes), and the result a
:data:`workbench.store.CALIBRATIONS` entry keyed by everything it depends on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rich.console import Console

from workbench.artifacts import atomic_write_json, nan_for_null
from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.evaluation import EvaluationConfig
from workbench.evaluation.runs import EvaluationRuns
from workbench.interventions import PositionRule
from workbench.methods import SteeringMethod, fingerprint_digest, get_method
from workbench.models import model_key
from workbench.store import CALIBRATIONS, Entry, Store

console = Console(stderr=True)

STRATEGIES: tuple[str, ...] = ("trust-region", "grid")
"""The calibration strategies."""
SELECTIONS: dict[str, str] = {"grid": "best dev score within bounds", "trust-region": "trust region on dev"}
"""How a result row says its setting was chosen, per strategy."""
SWEEP_KEYS: tuple[str, ...] = ("steering_score", "lid_success", "relevance", "coherence", "default_rate",
                               "delta_mass", "leakage_max", "kl", "nll_delta")
"""Evaluation keys kept in each sweep row (besides layer and strength)."""


class CalibrationError(WorkbenchError):
    """An unknown strategy, or a sweep with nothing to choose from."""


@runtime_checkable
class ChoosesOnDev(Protocol):
    """A method with choices of its own to make on the dev prompts before its strength (FOXP2's window)."""

    def dev_choices(self, model: Model, target: str, source: str, runs: EvaluationRuns, bounds: dict[str, float], *,
                    rule: PositionRule, progress: bool = True) -> dict[str, Any]:
        """The choices (JSON-ready; empty when there is nothing to choose)."""

    def with_choices(self, choices: dict[str, Any]) -> SteeringMethod:
        """The method with ``choices`` applied."""


def chosen_method(method: SteeringMethod, calibration: Calibration) -> SteeringMethod:
    """``method`` with the dev choices its calibration made applied (itself when it made none)."""
    return method.with_choices(calibration.choices) if calibration.choices and isinstance(method, ChoosesOnDev) \
        else method


@dataclass(frozen=True)
class CalibrationConfig:
    """How a method's (layer, strength) is chosen on the dev split."""

    strategy: str = "trust-region"
    """``trust-region`` (the one rule methods are compared under) or ``grid`` (best dev score within the bounds)."""
    n_prompts: int = 48
    """Dev-split prompts evaluated per setting."""
    max_new_tokens: int = 20
    """Tokens generated per prompt during calibration (the eval split uses the full evaluation length)."""
    n_utility_contexts: int = 64
    """Dev question/answer contexts the KL and NLL bounds are measured on."""
    reference_strength: float = 1.0
    """Strength at which the layers are compared (the closest grid strength is used)."""
    max_nll_delta: float | None = 0.03
    """Bound on the in-language NLL increase on the utility answers, nats/token."""
    max_kl: float | None = 0.08
    """Bound on KL(base || steered) over the answer positions of the utility contexts, nats."""
    max_leakage: float | None = 0.08
    """Bound on the increase of mass on the other languages' token sets (``leakage_max``)."""
    bounds_from: str | None = "prompt-native"
    """Registered method whose dev costs raise each bound when larger (native prompting); None: fixed bounds."""
    split: str = "dev"
    """Corpus split of the prompts (dev: disjoint from discovery and eval)."""
    layers: tuple[int, ...] | None = None
    """Candidate layers (None: the method's own grid)."""
    strengths: tuple[float, ...] | None = None
    """Candidate strengths (None: the method's own grid)."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise CalibrationError(f"unknown calibration strategy {self.strategy!r}; known: {', '.join(STRATEGIES)}")

    def grids(self, method: SteeringMethod, model: Model) -> tuple[list[int | None], list[float]]:
        """The layers and strengths searched for ``method`` on ``model``."""
        if not method.tunable:
            return method.layer_grid(model), method.strength_grid()
        return (list(self.layers or method.layer_grid(model)), list(self.strengths or method.strength_grid()))

    def evaluation(self) -> EvaluationConfig:
        return EvaluationConfig(max_new_tokens=self.max_new_tokens, n_utility_contexts=self.n_utility_contexts,
                                utility_split=self.split)

    def fixed_bounds(self) -> dict[str, float]:
        """The bounds that are set (None leaves a cost unbounded)."""
        limits = {"leakage_max": self.max_leakage, "kl": self.max_kl, "nll_delta": self.max_nll_delta}
        return {key: value for key, value in limits.items() if value is not None}


@dataclass(frozen=True)
class Calibration:
    """The chosen setting and the sweep it was chosen from."""

    method: str
    target: str
    source: str
    layer: int | None
    strength: float
    rule: str
    admissible: bool
    """Whether the chosen setting met every bound."""
    sweep: list[dict[str, Any]] = field(default_factory=list)
    """One row per evaluated setting: layer, strength, :data:`SWEEP_KEYS` and ``within_bounds`` (the dev frontier)."""
    config: dict[str, Any] = field(default_factory=dict)
    strategy: str = "trust-region"
    bounds: dict[str, float] = field(default_factory=dict)
    """The bounds the choice respected (after raising them to ``bounds_from``'s cost)."""
    choices: dict[str, Any] = field(default_factory=dict)
    """The method's own dev choices made before the sweep (:class:`ChoosesOnDev`; apply with
    :func:`chosen_method`)."""

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{**payload, "sweep": [nan_for_null(row, SWEEP_KEYS) for row in payload["sweep"]]})


def within(row: dict[str, Any], limits: dict[str, float]) -> bool:
    """Whether every bounded cost of ``row`` is within its limit."""
    return all(float(row[key]) <= limit for key, limit in limits.items())


def bounds(limits: dict[str, float], prompting: dict[str, Any] | None = None) -> dict[str, float]:
    """Each bound, raised to the prompting baseline's cost when that is larger (``prompting`` None: unchanged)."""
    if prompting is None:
        return dict(limits)
    return {key: max(value, float(prompting[key])) for key, value in limits.items()}


def choose(rows: Sequence[dict[str, Any]], limits: dict[str, float]) -> tuple[dict[str, Any], bool]:
    """Grid: best row within ``limits`` by steering score (ties: higher LID, then smaller strength); else the least
    damaging (smallest NLL increase, then strength), flagged False."""
    if not rows:
        raise CalibrationError("no calibration rows to choose from")
    admissible = [row for row in rows if within(row, limits)]
    if admissible:
        return max(admissible, key=lambda r: (r["steering_score"], r["lid_success"], -r["strength"])), True
    return least_damaging(rows), False


def least_damaging(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The row with the smallest in-language NLL increase (ties: the smaller strength): what both strategies fall
    back to when no setting is within the bounds. Not the smallest strength: a method's cost need not grow with its
    strength (LAPE's strength scales the target neurons' act(gate) while the English ones are zeroed at every
    strength, so x0.25 costs more than the paper's x1)."""
    return min(rows, key=lambda r: (r["nll_delta"], r["strength"]))


def kept_layer(rows: Sequence[dict[str, Any]]) -> int | None:
    """The layer whose row (all at the reference strength) has the best dev steering score; ties go to the higher
    LID success, then the larger dM (where nothing switches yet, the layer that moves the mass most), then the
    smaller KL."""
    if not rows:
        raise CalibrationError("no layer rows to choose from")
    return max(rows, key=lambda r: (r["steering_score"], r["lid_success"], r["delta_mass"], -r["kl"]))["layer"]


def choose_strength(rows: Sequence[dict[str, Any]], limits: dict[str, float]) -> tuple[dict[str, Any], bool]:
    """Trust region: the row with the largest strength within ``limits``; when none is, the
    :func:`least_damaging` one, flagged False."""
    if not rows:
        raise CalibrationError("no trust-region rows to choose from")
    inside = [row for row in rows if within(row, limits)]
    if inside:
        return max(inside, key=lambda row: row["strength"]), True
    return least_damaging(rows), False


def calibration_entry(model: Model, method: SteeringMethod, target: str, source: str, rule: PositionRule,
                      config: CalibrationConfig) -> Entry:
    layers, strengths = config.grids(method, model)
    key = {"model": model_key(model), "method": method.name, "target": target, "source": source, "layers": layers,
           "strengths": strengths, "config": asdict(config),
           "rule": str(rule), "fingerprint": fingerprint_digest(method)}
    return Store().entry(CALIBRATIONS, key, scope=model_key(model), label=f"{method.name}-{target}-{source}")


def calibration_runs(model: Model, target: str, source: str, config: CalibrationConfig) -> EvaluationRuns:
    """The dev prompts a calibration evaluates on (share one per target across methods: one unsteered baseline)."""
    return EvaluationRuns.from_split(model, target, source=source, split=config.split, n_prompts=config.n_prompts,
                                     config=config.evaluation())


def calibration_bounds(runs: EvaluationRuns, config: CalibrationConfig) -> dict[str, float]:
    """The bounds on the dev prompts of ``runs``: the fixed ones, each raised to ``bounds_from``'s cost."""
    if config.bounds_from is None:
        return config.fixed_bounds()
    reference_method = get_method(config.bounds_from)
    reference, _ = runs.run_method(reference_method, layer=None, strength=1.0, rule=reference_method.default_rule)
    return bounds(config.fixed_bounds(), reference)


def calibrate(model: Model, method: SteeringMethod, target: str, source: str = "en", *,
              rule: PositionRule | None = None, config: CalibrationConfig = CalibrationConfig(),
              use_cache: bool = True, progress: bool = True, runs: EvaluationRuns | None = None) -> Calibration:
    """Choose ``method``'s layer and strength for ``target`` on the dev split by its strategy (cached).

    ``runs`` (from :func:`calibration_runs` with the same config) lets several methods share the dev prompts' one
    unsteered baseline.
    """
    rule = rule or method.default_rule
    strategy = config.strategy
    entry = calibration_entry(model, method, target, source, rule, config)
    if use_cache and entry.ready():
        return Calibration.load(entry / "calibration.json")
    layers, strengths = config.grids(method, model)
    if not method.tunable:
        return Calibration(method.name, target, source, layers[0], strengths[0], str(rule), True,
                           config=asdict(config), strategy=strategy)
    runs = runs or calibration_runs(model, target, source, config)
    limits = calibration_bounds(runs, config)
    choices: dict[str, Any] = {}
    if isinstance(method, ChoosesOnDev):
        choices = method.dev_choices(model, target, source, runs, limits, rule=rule, progress=progress)
        method = method.with_choices(choices)
    rows: dict[tuple[int | None, float], dict[str, Any]] = {}

    def run(layer: int | None, strength: float) -> dict[str, Any]:
        if (layer, strength) not in rows:
            metrics, _ = runs.run_method(method, layer=layer, strength=strength, rule=rule)
            row = {"layer": layer, "strength": strength, **{key: metrics[key] for key in SWEEP_KEYS}}
            row["within_bounds"] = within(row, limits)
            rows[layer, strength] = row
            if progress:
                console.print(f"  calibrate {method.name}->{target} layer {layer} x{strength:g}: score "
                              f"{row['steering_score']:.2f} (LID {row['lid_success']:.2f}, relevance "
                              f"{row['relevance']:.2f}), NLL {row['nll_delta']:+.2f}, KL {row['kl']:.2f}, "
                              f"leak {row['leakage_max']:.3f}{'' if row['within_bounds'] else ' (outside bounds)'}")
        return rows[layer, strength]

    reference = min(strengths, key=lambda s: abs(s - config.reference_strength))
    best_layer = kept_layer([run(layer, reference) for layer in layers]) if len(layers) > 1 else layers[0]
    for strength in strengths:
        run(best_layer, strength)
    if strategy == "trust-region":
        chosen, admissible = choose_strength([row for row in rows.values() if row["layer"] == best_layer], limits)
    else:
        chosen, admissible = choose(list(rows.values()), limits)
    result = Calibration(method.name, target, source, chosen["layer"], chosen["strength"], str(rule), admissible,
                         sweep=list(rows.values()), config=asdict(config), strategy=strategy, bounds=limits,
                         choices=choices)
    if progress and not admissible:
        console.print(f"[yellow]no {method.name} setting for {target} met the bounds {limits}; "
                      "using the least damaging one[/yellow]")
    result.save(entry.prepare() / "calibration.json")
    entry.commit()
    return result
