"""The benchmark runner: methods x target languages (x layers x strengths) on the eval split.

Tunable methods are calibrated on the dev split first (:mod:`workbench.calibration`); the leaderboard
reports each method at its calibrated setting, evaluated on eval prompts only. An optional sweep evaluates a
layer x strength grid on eval for the layer/strength heatmaps. Every evaluation is a store entry
(:class:`workbench.evaluation.runs.EvaluationRuns`), written as soon as it finishes and reused by a re-run with the
same settings, so an interrupted run loses nothing; each is also exported to ``runs/<run name>.json``.

Writes ``results.csv`` (tidy: one row per evaluated setting), ``metrics.json`` (the evaluation keys with CIs per
target and method), ``leaderboard.md``, ``calibration.json`` and the html figures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from workbench.artifacts import atomic_write_json, atomic_write_text
from workbench.calibration import CalibrationConfig, calibrate
from workbench.errors import WorkbenchError
from workbench.evaluation import Baseline, EvaluationConfig, SteeringMetrics
from workbench.evaluation.runs import EvaluationRuns
from workbench.interventions import PositionRule
from workbench.languages import get_language
from workbench.methods import SteeringMethod, fingerprint_digest, get_methods
from workbench.models import model_metadata
from workbench.plots import heatmap

console = Console(stderr=True)


class BenchError(WorkbenchError):
    """A benchmark configuration that cannot run."""

METRIC_COLUMNS = ("steering_score", "lid_success", "relevance", "default_rate", "delta_mass", "leakage_max",
                  "leakage_mean", "kl", "nll_delta", "en_ppl_delta")


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs."""

    methods: tuple[str, ...] = ("none", "prompt-en", "prompt-native", "diffmean", "pca", "lda", "probe")
    """Registered method names (see ``workbench.methods.method_names()``)."""
    targets: tuple[str, ...] = ("hi", "es")
    """Target languages (any language of the shipped corpus)."""
    source: str = "en"
    """Language steered away from (the prompts' language)."""
    n_prompts: int = 24
    """Eval-split prompts per evaluation."""
    rule: str | None = None
    """Position rule for every method (``all``, ``final``, ``final+k``); None: each method's default."""
    sweep_methods: tuple[str, ...] = ()
    """Methods whose layer x strength grid is also evaluated on eval (for the layer/strength heatmaps)."""
    sweep_layers: tuple[int, ...] | None = None
    """Sweep layers (None: the method's calibration grid)."""
    sweep_strengths: tuple[float, ...] | None = None
    """Sweep strengths (None: the method's calibration grid)."""
    evaluation: EvaluationConfig = EvaluationConfig()
    """Evaluation settings on eval."""
    calibration: CalibrationConfig = CalibrationConfig()
    """Calibration settings on dev."""

    def __post_init__(self) -> None:
        for code in (*self.targets, self.source):
            get_language(code)
        if self.rule is not None:
            PositionRule.parse(self.rule)
        outside = set(self.sweep_methods) - set(self.methods)
        if not self.methods or not self.targets or self.n_prompts < 2:
            raise BenchError("a benchmark needs at least one method, one target and two prompts")
        if outside:
            raise BenchError(f"sweep_methods {sorted(outside)} are not among methods {list(self.methods)}")


@dataclass
class BenchResult:
    """The tidy table and the per-(target, method) metrics at the calibrated settings."""

    table: pd.DataFrame
    leaderboard: dict[str, dict[str, SteeringMetrics]] = field(default_factory=dict)
    calibrations: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def _run_name(method: str, target: str, layer: int | None, strength: float, rule: PositionRule) -> str:
    layer_part = "na" if layer is None else f"L{layer}"
    return f"{method}-{target}-{layer_part}-s{strength:g}-{str(rule).replace('+', 'p')}"


def _evaluate(runs: EvaluationRuns, method: SteeringMethod, layer: int | None, strength: float, rule: PositionRule
              ) -> tuple[dict[str, Any], float]:
    identity = {"method": method.name, "fingerprint": fingerprint_digest(method), "layer": layer,
                "strength": strength, "rule": str(rule)}
    treatment = method.treatment(runs.model, runs.target, runs.source, layer=layer, strength=strength, rule=rule)
    return runs.run(_run_name(method.name, runs.target, layer, strength, rule),
                    {**identity, "treatment": treatment.description, **treatment.provenance},
                    treatment.interventions, treatment.prompt_rewriter)


def _without_records(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if key != "records"}


def _row(metrics: dict[str, Any], method: str, target: str, layer: int | None, strength: float, rule: PositionRule,
         selection: str, seconds: float) -> dict[str, Any]:
    row = {"method": method, "target": target, "source": metrics["source"], "layer": layer, "strength": strength,
           "rule": str(rule), "selection": selection, "n_prompts": metrics["n_prompts"]}
    for column in METRIC_COLUMNS:
        row[column] = metrics[column]
        if f"{column}_ci" in metrics:
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = metrics[f"{column}_ci"]
    row["relevance_chance"] = metrics["relevance_chance"]
    row["seconds"] = seconds
    return row


def run_bench(model: Any, config: BenchConfig, out_dir: str | Path, *, progress: bool = True) -> BenchResult:
    """Calibrate on dev, evaluate on eval, write the table, leaderboard, metrics and figures to ``out_dir``."""
    out_dir = Path(out_dir)
    methods = get_methods(config.methods)
    rows: list[dict[str, Any]] = []
    dev_baselines: dict[str, Baseline] = {}
    result = BenchResult(table=pd.DataFrame())
    for target in config.targets:
        runs = EvaluationRuns.from_split(model, target, source=config.source, split="eval",
                                         n_prompts=config.n_prompts, config=config.evaluation,
                                         export_dir=out_dir / "runs")
        result.leaderboard[target], result.calibrations[target] = {}, {}
        for method in methods:
            rule = PositionRule.parse(config.rule) if config.rule else method.default_rule
            if progress:
                console.print(f"[bold]{target}[/bold] / {method.name}: calibrating on dev" if method.tunable else
                              f"[bold]{target}[/bold] / {method.name}")
            calibration = calibrate(model, method, target, config.source, rule=rule, config=config.calibration,
                                    progress=progress, baselines=dev_baselines)
            result.calibrations[target][method.name] = asdict(calibration)
            metrics, seconds = _evaluate(runs, method, calibration.layer, calibration.strength, rule)
            payload = _without_records(metrics)
            result.leaderboard[target][method.name] = payload
            rows.append(_row(payload, method.name, target, calibration.layer, calibration.strength, rule,
                             "calibrated on dev" if method.tunable else "fixed", seconds))
            if progress:
                console.print(f"  eval: score {payload['steering_score']:.2f} LID {payload['lid_success']:.2f} "
                              f"relevance {payload['relevance']:.2f} ({seconds:.1f} s)")
            if method.name in config.sweep_methods:
                for layer in config.sweep_layers or method.layer_grid(model):
                    for strength in config.sweep_strengths or method.strength_grid():
                        swept, seconds = _evaluate(runs, method, layer, strength, rule)
                        rows.append(_row(_without_records(swept), method.name, target, layer, strength, rule, "sweep",
                                         seconds))
            result.table = pd.DataFrame(rows).astype({"layer": "Int64"})
            write_reports(result, config, out_dir, model_metadata(model))
    return result


def _with_ci(metrics: dict[str, Any], key: str) -> str:
    low, high = metrics[f"{key}_ci"]
    return f"{metrics[key]:.2f} [{low:.2f}, {high:.2f}]"


def leaderboard_markdown(result: BenchResult, config: BenchConfig) -> str:
    """Per target, methods ranked by steering score at their calibrated setting, with 95% intervals."""
    lines = ["# Steering leaderboard", "",
             f"Eval split, {config.n_prompts} English prompts per target, {config.evaluation.max_new_tokens} greedy "
             "tokens; layer and strength calibrated on the dev split. 95% intervals: Wilson for rates, bootstrap "
             "otherwise. Score = harmonic mean of LID success and relevance.", ""]
    for target, by_method in result.leaderboard.items():
        chance = next(iter(by_method.values()))["relevance_chance"] if by_method else math.nan
        lines += [f"## {get_language(target).name} ({target}); relevance chance {chance:.3f}", "",
                  "| method | setting | score | LID | relevance | DEFAULT | dM | leak max | KL | NLL Δ | en ppl Δ |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        ranked = sorted(by_method.items(), key=lambda item: -item[1]["steering_score"])
        for method, metrics in ranked:
            calibration = result.calibrations[target][method]
            where = "all layers" if calibration["layer"] is None else f"L{calibration['layer']}"
            setting = ("—" if len(calibration["sweep"]) <= 1 else f"{where} ×{calibration['strength']:g}" +
                       ("" if calibration["admissible"] else " (bound not met)"))
            lines.append(
                f"| {method} | {setting} | {_with_ci(metrics, 'steering_score')} | {_with_ci(metrics, 'lid_success')} "
                f"| {_with_ci(metrics, 'relevance')} | {_with_ci(metrics, 'default_rate')} "
                f"| {_with_ci(metrics, 'delta_mass')} | {metrics['leakage_max']:.3f} | {_with_ci(metrics, 'kl')} "
                f"| {_with_ci(metrics, 'nll_delta')} | {metrics['en_ppl_delta']:.3g} |")
        lines.append("")
    return "\n".join(lines)


def method_language_figure(table: pd.DataFrame) -> Any:
    """Steering score of every method (rows) for every target (columns) at the calibrated settings of ``table``
    (the tidy ``results.csv``)."""
    calibrated = table[table["selection"] != "sweep"]
    return heatmap(calibrated, x="target", y="method", value="steering_score",
                   title="Steering score by method and target language (eval split, calibrated settings)",
                   x_title="target language", y_title="method", colour_title="steering score (0-1)")


def write_reports(result: BenchResult, config: BenchConfig, out_dir: Path, model: dict[str, Any]) -> None:
    """``results.csv``, ``metrics.json``, ``calibration.json``, ``leaderboard.md`` and the heatmaps."""
    table = result.table
    table.to_csv(out_dir / "results.csv", index=False)
    atomic_write_json(out_dir / "metrics.json", {"model": model, "config": asdict(config),
                                                 "metrics": result.leaderboard})
    atomic_write_json(out_dir / "calibration.json", result.calibrations)
    atomic_write_text(out_dir / "leaderboard.md", leaderboard_markdown(result, config))
    calibrated = table[table["selection"] != "sweep"]
    if not calibrated.empty:
        method_language_figure(table).write_html(out_dir / "bench_method_language.html", include_plotlyjs="cdn")
    for (method, target), rows in table[table["selection"] == "sweep"].groupby(["method", "target"]):
        heatmap(rows, x="strength", y="layer", value="steering_score",
                title=f"{method} → {target}: steering score by layer and strength (eval split)",
                x_title="strength (× ‖mean(target) − mean(source)‖)", y_title="layer (hook_resid_post)",
                colour_title="steering score").write_html(
            out_dir / f"bench_layer_strength_{method}_{target}.html", include_plotlyjs="cdn")
