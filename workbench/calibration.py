"""Calibration: choose a method's layer and strength on the dev split, never on eval.

Coarse to fine: every candidate layer at the reference strength, then every candidate strength at the best
layer. A setting is admissible when its in-language NLL increase stays within ``max_nll_delta`` (and its KL
within ``max_kl`` if given); the admissible setting with the highest steering score wins, ties going to the
weaker edit. When none is admissible the least damaging one is returned and flagged. Results are cached as
:data:`workbench.store.CALIBRATIONS` entries keyed by everything they depend on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from workbench import corpus
from workbench.artifacts import atomic_write_json
from workbench.evaluation import QA_TEMPLATE, Baseline, EvaluationConfig, compute_baseline, evaluate
from workbench.interventions import PositionRule, hooks_for
from workbench.methods import SteeringMethod, fingerprint_digest
from workbench.models import model_key
from workbench.store import CALIBRATIONS, Entry, Store

console = Console(stderr=True)


@dataclass(frozen=True)
class CalibrationConfig:
    """How a method's (layer, strength) is chosen on the dev split."""

    n_prompts: int = 12
    """Dev-split prompts evaluated per setting."""
    max_new_tokens: int = 20
    """Tokens generated per prompt during calibration (the eval split uses the full evaluation length)."""
    n_utility_texts: int = 8
    """Held-out texts for the NLL bound."""
    reference_strength: float = 1.0
    """Strength at which layers are compared (the closest grid strength is used)."""
    max_nll_delta: float = 0.5
    """Utility bound: in-language NLL increase, nats/token (DiffMean x1 into Hindi costs ~1.3; into Spanish ~0)."""
    max_kl: float | None = None
    """Optional bound on KL(base || steered) on committed contexts, nats."""
    split: str = "dev"
    """Corpus split of the prompts (dev: disjoint from discovery and eval)."""
    layers: tuple[int, ...] | None = None
    """Candidate layers (None: the method's own grid)."""
    strengths: tuple[float, ...] | None = None
    """Candidate strengths (None: the method's own grid)."""

    def grids(self, method: SteeringMethod, model: Any) -> tuple[list[int | None], list[float]]:
        """The layers and strengths searched for ``method`` on ``model``."""
        if not method.tunable:
            return method.layer_grid(model), method.strength_grid()
        return (list(self.layers or method.layer_grid(model)), list(self.strengths or method.strength_grid()))

    def evaluation(self) -> EvaluationConfig:
        return EvaluationConfig(max_new_tokens=self.max_new_tokens, n_utility_texts=self.n_utility_texts,
                                utility_split=self.split)


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
    """Whether the chosen setting met the utility bound(s)."""
    sweep: list[dict[str, Any]] = field(default_factory=list)
    """One row per evaluated setting: layer, strength, steering score, LID, relevance, NLL change, KL."""
    config: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls(**json.loads(Path(path).read_text()))


def _admissible(row: dict[str, Any], config: CalibrationConfig) -> bool:
    within_kl = config.max_kl is None or row["kl"] <= config.max_kl
    return row["nll_delta"] <= config.max_nll_delta and within_kl


def choose(rows: list[dict[str, Any]], config: CalibrationConfig) -> tuple[dict[str, Any], bool]:
    """Best admissible row by steering score (ties: higher LID, then smaller strength); else the least damaging."""
    admissible = [row for row in rows if _admissible(row, config)]
    if admissible:
        return max(admissible, key=lambda r: (r["steering_score"], r["lid_success"], -r["strength"])), True
    return min(rows, key=lambda r: (r["nll_delta"], r["strength"])), False


def calibration_entry(model: Any, method: SteeringMethod, target: str, source: str, rule: PositionRule,
                      config: CalibrationConfig) -> Entry:
    layers, strengths = config.grids(method, model)
    key = {"model": model_key(model), "method": method.name, "target": target, "source": source, "layers": layers,
           "strengths": strengths, "config": asdict(config), "rule": str(rule),
           "fingerprint": fingerprint_digest(method)}
    return Store().entry(CALIBRATIONS, key, scope=model_key(model), label=f"{method.name}-{target}-{source}")


def calibrate(model: Any, method: SteeringMethod, target: str, source: str = "en", *,
              rule: PositionRule | None = None, config: CalibrationConfig = CalibrationConfig(),
              use_cache: bool = True, progress: bool = True,
              baselines: dict[str, Baseline] | None = None) -> Calibration:
    """Choose ``method``'s layer and strength for ``target`` on the dev split (cached).

    ``baselines`` (target -> unsteered dev runs) lets several methods share one unsteered baseline; a missing
    entry is computed and stored in it.
    """
    rule = rule or method.default_rule
    entry = calibration_entry(model, method, target, source, rule, config)
    if use_cache and entry.ready():
        return Calibration.load(entry / "calibration.json")
    layers, strengths = config.grids(method, model)
    if not method.tunable:
        return Calibration(method.name, target, source, layers[0], strengths[0], str(rule), True,
                           config=asdict(config))
    prompts = corpus.prompts(split=config.split, n=config.n_prompts)
    texts = [QA_TEMPLATE.format(prompt=p.prompt) for p in prompts]
    references = [p.reference.get(target) for p in prompts]
    evaluation = config.evaluation()
    baselines = {} if baselines is None else baselines
    if target not in baselines:
        baselines[target] = compute_baseline(model, texts, target, source=source, references=references,
                                             config=evaluation)
    baseline = baselines[target]
    rows: list[dict[str, Any]] = []

    def run(layer: int | None, strength: float) -> dict[str, Any]:
        treatment = method.treatment(model, target, source, layer=layer, strength=strength, rule=rule)
        metrics = evaluate(model, texts, target, source=source, hooks=hooks_for(model, treatment.interventions),
                           prompt_rewriter=treatment.prompt_rewriter, baseline=baseline, config=evaluation)
        row = {"layer": layer, "strength": strength, "steering_score": metrics.steering_score,
               "lid_success": metrics.lid_success, "relevance": metrics.relevance,
               "delta_mass": metrics.delta_mass, "nll_delta": metrics.nll_delta, "kl": metrics.kl}
        rows.append(row)
        if progress:
            console.print(f"  calibrate {method.name}->{target} layer {layer} x{strength:g}: score "
                          f"{row['steering_score']:.2f} (LID {row['lid_success']:.2f}, relevance "
                          f"{row['relevance']:.2f}), NLL {row['nll_delta']:+.2f}, KL {row['kl']:.2f}")
        return row

    reference = min(strengths, key=lambda s: abs(s - config.reference_strength))
    best_layer = choose([run(layer, reference) for layer in layers], config)[0]["layer"]
    for strength in strengths:
        if strength != reference:
            run(best_layer, strength)
    chosen, admissible = choose(rows, config)
    result = Calibration(method.name, target, source, chosen["layer"], chosen["strength"], str(rule), admissible,
                         sweep=rows, config=asdict(config))
    if progress and not admissible:
        console.print(f"[yellow]no {method.name} setting for {target} met the utility bound "
                      f"(NLL increase <= {config.max_nll_delta}); using the least damaging one[/yellow]")
    result.save(entry.prepare() / "calibration.json")
    entry.commit()
    return result

