"""The benchmark runner: methods x target languages (x layers x strengths) on the eval split.

Tunable methods are calibrated on the dev split first (:mod:`workbench.calibration`); the leaderboard
reports each method at its calibrated setting, evaluated on eval prompts only. An optional sweep evaluates a
layer x strength grid on eval for the layer/strength heatmaps. Every evaluation is a store entry
(:class:`workbench.evaluation.runs.EvaluationRuns`), written as soon as it finishes and reused by a re-run with the
same settings, so an interrupted run loses nothing; each is also exported to ``runs/<run name>.json``.

Writes the shared result schema (:mod:`workbench.evaluation.results`: ``results.csv``, one typed row per evaluated
setting; ``metrics.json``, the evaluation keys with CIs per target and method; ``leaderboard.md``), plus
``calibration.json``, each tunable method's dev frontier (``frontier.csv`` and its figure) and the html figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from itertools import cycle
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from rich.console import Console

from workbench import corpus
from workbench.artifacts import atomic_write_json, atomic_write_text
from workbench.backends import Model
from workbench.calibration import SELECTIONS, CalibrationConfig, calibrate, calibration_runs, chosen_method
from workbench.errors import WorkbenchError
from workbench.evaluation import EvaluationConfig
from workbench.evaluation.evaluate import UtilityContexts
from workbench.evaluation.results import ResultRow, results_table, write_results
from workbench.evaluation.runs import EvaluationRuns
from workbench.interventions import PositionRule
from workbench.languages import get_language
from workbench.methods import SteeringMethod, get_methods
from workbench.models import model_metadata
from workbench.plots import OKABE_ITO, heatmap, style
from workbench.static_export import write_static

console = Console(stderr=True)


class BenchError(WorkbenchError):
    """A benchmark configuration that cannot run."""



@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs."""

    methods: tuple[str, ...] = ("none", "prompt-en", "prompt-native", "diffmean", "pca", "lda", "probe",
                                "pca-matched", "lda-matched", "probe-matched", "sae-diffmean", "langfir", "lape",
                                "clas", "foxp2")
    """Registered method names (see ``workbench.methods.method_names()``)."""
    targets: tuple[str, ...] = ("hi", "es", "zh")
    """Target languages (any language of the shipped corpus)."""
    source: str = "en"
    """Language steered away from (the prompts' language)."""
    n_prompts: int | None = None
    """Eval-split prompts per evaluation (None: every prompt of the split, 74)."""
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
        if not self.methods or not self.targets or (self.n_prompts is not None and self.n_prompts < 2):
            raise BenchError("a benchmark needs at least one method, one target and two prompts")
        if self.source in self.targets:
            raise BenchError(f"target {self.source!r} is also the source: steering needs targets other than the "
                             "source language")
        if outside:
            raise BenchError(f"sweep_methods {sorted(outside)} are not among methods {list(self.methods)}")
        for target in self.targets:  # utility contexts on both splits, before any model work
            for split in (self.calibration.split, "eval"):
                UtilityContexts.from_corpus(target, self.source, replace(self.evaluation, utility_split=split))


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
            method = chosen_method(method, calibration)
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
    n_prompts = len(corpus.prompts(split="eval", n=config.n_prompts))
    return (f"Eval split, {n_prompts} English prompts per target, {config.evaluation.max_new_tokens} greedy "
            "tokens; layer and strength calibrated on the dev split by one trust region (the strongest setting "
            "whose dev KL, leakage and NLL stay within bounds raised to native prompting's cost). 95% intervals: "
            "Wilson for rates, bootstrap otherwise. Score = harmonic mean of LID success and mean(relevance x "
            f"coherent); relevance from the {config.evaluation.relevance} scorer; score v1 = the first score "
            "(whole-output LID, retrieval relevance).")


def method_language_figure(table: pd.DataFrame) -> Any:
    """Steering score of every method (rows) for every target (columns) at the calibrated settings of ``table``
    (the tidy ``results.csv``)."""
    calibrated = table[table["selection"] != "sweep"]
    return heatmap(calibrated, x="target", y="method", value="steering_score",
                   title="Steering score by method and target language (eval split, calibrated settings)",
                   x_title="target language", y_title="method", colour_title="steering score (0-1)")


FRONTIER_COLUMNS: tuple[str, ...] = ("target", "method", "layer", "strength", "lid_success", "default_rate", "kl",
                                      "nll_delta", "leakage_max", "steering_score", "relevance", "within_bounds",
                                      "chosen", "bound_kl", "bound_nll_delta", "bound_leakage_max")
"""Columns of ``frontier.csv``: one row per dev setting a tunable method's calibration evaluated."""


def frontier_table(calibrations: dict[str, dict[str, dict[str, Any]]]) -> pd.DataFrame:
    """Every tunable method's dev sweep (target -> method -> :class:`Calibration` as a dict) as one tidy table."""
    rows = []
    for target, by_method in calibrations.items():
        for method, calibration in by_method.items():
            limits = calibration.get("bounds", {})
            for row in calibration.get("sweep", []):
                rows.append({**{key: row.get(key) for key in FRONTIER_COLUMNS}, "target": target, "method": method,
                             "chosen": (row["layer"], row["strength"]) == (calibration["layer"],
                                                                           calibration["strength"]),
                             **{f"bound_{key}": limits.get(key) for key in ("kl", "nll_delta", "leakage_max")}})
    return pd.DataFrame(rows, columns=list(FRONTIER_COLUMNS))


def frontier_figure(frontier: pd.DataFrame) -> go.Figure:
    """LID success (solid) and DEFAULT rate (dotted) against dev KL over each method's strength grid at its kept
    layer, one panel per target; the chosen setting ringed, the KL bound dashed."""
    targets = list(dict.fromkeys(frontier["target"]))
    figure = make_subplots(rows=1, cols=len(targets), subplot_titles=[f"→ {t}" for t in targets], shared_yaxes=True)
    colours = dict(zip(dict.fromkeys(frontier["method"]), cycle(OKABE_ITO), strict=False))
    for column, target in enumerate(targets, start=1):
        rows = frontier[frontier["target"] == target]
        for method, sweep in rows.groupby("method", sort=False):
            chosen = sweep[sweep["chosen"]]
            curve = sweep[sweep["layer"].isna() | (sweep["layer"] == chosen["layer"].iloc[0])] if len(chosen) else sweep
            curve = curve.sort_values("strength")
            for value, dash in (("lid_success", "solid"), ("default_rate", "dot")):
                figure.add_trace(go.Scatter(
                    x=curve["kl"], y=curve[value], mode="lines+markers", name=method, legendgroup=method,
                    showlegend=column == 1 and value == "lid_success", line={"color": colours[method], "dash": dash},
                    customdata=curve[["strength", "layer"]].to_numpy(),
                    hovertemplate=f"{method} {value}: %{{y:.2f}}<br>KL %{{x:.3f}}<br>strength %{{customdata[0]}}"
                                  "<br>layer %{customdata[1]}<extra></extra>"), row=1, col=column)
            figure.add_trace(go.Scatter(x=chosen["kl"], y=chosen["lid_success"], mode="markers", showlegend=False,
                                        legendgroup=method, hoverinfo="skip", marker={
                                            "size": 16, "color": "rgba(0,0,0,0)",
                                            "line": {"color": colours[method], "width": 2}}), row=1, col=column)
        bound = rows["bound_kl"].dropna()
        if len(bound):
            figure.add_vline(x=float(bound.iloc[0]), line_dash="dash", line_color="#666666", row=1, col=column)
    figure.update_xaxes(title_text="dev KL(base ‖ steered), nats", type="log")
    figure.update_yaxes(title_text="LID success (solid) / DEFAULT (dotted)", range=[-0.02, 1.02], col=1)
    figure.update_layout(title="Dev frontiers: language control against KL over each method's strength grid",
                         legend_title="method")
    return style(figure)


def write_reports(result: BenchResult, config: BenchConfig, out_dir: Path, model: dict[str, Any]) -> None:
    """``results.csv``, ``metrics.json``, ``leaderboard.md`` (the shared schema), ``calibration.json``, the dev
    frontiers (``frontier.csv`` / ``.html`` / ``.png``) and the heatmaps."""
    table = write_results(result.rows, result.leaderboard, out_dir, title="Steering leaderboard",
                          intro=leaderboard_intro(config), extra={"model": model, "config": asdict(config)})
    atomic_write_json(out_dir / "calibration.json", result.calibrations)
    frontier = frontier_table(result.calibrations)
    atomic_write_text(out_dir / "frontier.csv", frontier.to_csv(index=False))
    if not frontier.empty:
        figure = frontier_figure(frontier)
        figure.write_html(out_dir / "frontier.html", include_plotlyjs="cdn")
        write_static(figure, out_dir / "frontier.png")
    calibrated = table[table["selection"] != "sweep"]
    if not calibrated.empty:
        method_language_figure(table).write_html(out_dir / "bench_method_language.html", include_plotlyjs="cdn")
    for (method, target), rows in table[table["selection"] == "sweep"].groupby(["method", "target"]):
        heatmap(rows, x="strength", y="layer", value="steering_score",
                title=f"{method} → {target}: steering score by layer and strength (eval split)",
                x_title="strength (× ‖mean(target) − mean(source)‖)", y_title="layer (hook_resid_post)",
                colour_title="steering score").write_html(
            out_dir / f"bench_layer_strength_{method}_{target}.html", include_plotlyjs="cdn")
