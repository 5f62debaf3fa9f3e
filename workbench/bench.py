"""The benchmark runner: methods x target languages (x layers x strengths) on the eval split.

Tunable methods are calibrated on the dev split first (:mod:`workbench.calibration`); the leaderboard
reports each method at its calibrated setting, evaluated on eval prompts only. An optional sweep evaluates a
layer x strength grid on eval for the layer/strength heatmaps. Every evaluation is a store entry
(:class:`workbench.evaluation.runs.EvaluationRuns`), written as soon as it finishes and reused by a re-run with the
same settings, so an interrupted run loses nothing; each is also exported to ``runs/<run name>.json``.

Writes the shared result schema (:mod:`workbench.evaluation.results`: ``results.csv``, one typed row per evaluated
setting; ``metrics.json``, the evaluation keys with CIs per target and method; ``leaderboard.md``), plus
``calibration.json`` and the html figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from workbench.artifacts import atomic_write_json
from workbench.backends import Model
from workbench.calibration import SELECTIONS, CalibrationConfig, calibrate, calibration_runs
from workbench.errors import WorkbenchError
from workbench.evaluation import EvaluationConfig
from workbench.evaluation.results import ResultRow, results_table, write_results
from workbench.evaluation.runs import EvaluationRuns
from workbench.interventions import PositionRule
from workbench.languages import get_language
from workbench.methods import SteeringMethod, get_methods
from workbench.models import model_metadata
from workbench.plots import heatmap

console = Console(stderr=True)


class BenchError(WorkbenchError):
    """A benchmark configuration that cannot run."""



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
    """The result rows (calibrated settings and sweeps) and the per-(target, method) metrics at the calibrated
    settings."""

    rows: list[ResultRow] = field(default_factory=list)
    leaderboard: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Target -> method -> its eval metrics with intervals (JSON-ready, without per-prompt records)."""
    calibrations: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        """The tidy ``results.csv`` table."""
        return results_table(self.rows)


def _run_name(method: str, target: str, layer: int | None, strength: float, rule: PositionRule) -> str:
    layer_part = "na" if layer is None else f"L{layer}"
    return f"{method}-{target}-{layer_part}-s{strength:g}-{str(rule).replace('+', 'p')}"


def _evaluate(runs: EvaluationRuns, method: SteeringMethod, layer: int | None, strength: float, rule: PositionRule
              ) -> tuple[dict[str, Any], float]:
    return runs.run_method(method, layer=layer, strength=strength, rule=rule,
                           name=_run_name(method.name, runs.target, layer, strength, rule))


def _without_records(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if key != "records"}


def run_bench(model: Model, config: BenchConfig, out_dir: str | Path, *, progress: bool = True) -> BenchResult:
    """Calibrate on dev, evaluate on eval, write the table, leaderboard, metrics and figures to ``out_dir``."""
    out_dir = Path(out_dir)
    methods = get_methods(config.methods)
    dev_runs: dict[str, EvaluationRuns] = {}
    result = BenchResult()
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
            if target not in dev_runs:
                dev_runs[target] = calibration_runs(model, target, config.source, config.calibration)
            calibration = calibrate(model, method, target, config.source, rule=rule, config=config.calibration,
                                    progress=progress, runs=dev_runs[target])
            result.calibrations[target][method.name] = asdict(calibration)
            metrics, seconds = _evaluate(runs, method, calibration.layer, calibration.strength, rule)
            payload = _without_records(metrics)
            result.leaderboard[target][method.name] = payload
            selection = SELECTIONS[calibration.strategy] if method.tunable else "fixed"
            result.rows.append(ResultRow.from_metrics(
                payload, method=method.name, layer=calibration.layer, strength=calibration.strength, rule=str(rule),
                selection=selection, within_bounds=calibration.admissible if method.tunable else None))
            if progress:
                console.print(f"  eval: score {payload['steering_score']:.2f} LID {payload['lid_success']:.2f} "
                              f"relevance {payload['relevance']:.2f} ({seconds:.1f} s)")
            if method.name in config.sweep_methods:
                for layer in config.sweep_layers or method.layer_grid(model):
                    for strength in config.sweep_strengths or method.strength_grid():
                        swept, _ = _evaluate(runs, method, layer, strength, rule)
                        result.rows.append(ResultRow.from_metrics(swept, method=method.name, layer=layer,
                                                                  strength=strength, rule=str(rule),
                                                                  selection="sweep"))
            write_reports(result, config, out_dir, model_metadata(model))
    return result


def leaderboard_intro(config: BenchConfig) -> str:
    return (f"Eval split, {config.n_prompts} English prompts per target, {config.evaluation.max_new_tokens} greedy "
            "tokens; layer and strength calibrated on the dev split. 95% intervals: Wilson for rates, bootstrap "
            "otherwise. Score = harmonic mean of LID success and mean(relevance x coherent); relevance from the "
            f"{config.evaluation.relevance} scorer; score v1 = the first score (whole-output LID, retrieval "
            "relevance).")


def method_language_figure(table: pd.DataFrame) -> Any:
    """Steering score of every method (rows) for every target (columns) at the calibrated settings of ``table``
    (the tidy ``results.csv``)."""
    calibrated = table[table["selection"] != "sweep"]
    return heatmap(calibrated, x="target", y="method", value="steering_score",
                   title="Steering score by method and target language (eval split, calibrated settings)",
                   x_title="target language", y_title="method", colour_title="steering score (0-1)")


def write_reports(result: BenchResult, config: BenchConfig, out_dir: Path, model: dict[str, Any]) -> None:
    """``results.csv``, ``metrics.json``, ``leaderboard.md`` (the shared schema), ``calibration.json`` and the
    heatmaps."""
    table = write_results(result.rows, result.leaderboard, out_dir, title="Steering leaderboard",
                          intro=leaderboard_intro(config), extra={"model": model, "config": asdict(config)})
    atomic_write_json(out_dir / "calibration.json", result.calibrations)
    calibrated = table[table["selection"] != "sweep"]
    if not calibrated.empty:
        method_language_figure(table).write_html(out_dir / "bench_method_language.html", include_plotlyjs="cdn")
    for (method, target), rows in table[table["selection"] == "sweep"].groupby(["method", "target"]):
        heatmap(rows, x="strength", y="layer", value="steering_score",
                title=f"{method} → {target}: steering score by layer and strength (eval split)",
                x_title="strength (× ‖mean(target) − mean(source)‖)", y_title="layer (hook_resid_post)",
                colour_title="steering score").write_html(
            out_dir / f"bench_layer_strength_{method}_{target}.html", include_plotlyjs="cdn")
