"""The demo job (``make demo``): a small steering benchmark for Hindi and Spanish on the embedded model.

Every method of the steering engine (no steering, both prompting baselines, DiffMean, PCA, LDA, probe) is
calibrated on dev prompts and evaluated on eval prompts, with a small layer x strength sweep of DiffMean. Writes
to ``out_dir`` everything the benchmark runner writes (``results.csv``, ``leaderboard.md``, ``metrics.json``,
heatmaps) plus ``directions_by_layer.html`` and the direction sets used (``directions/<target>/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.evaluation import EvaluationConfig
from workbench.models import load_model
from workbench.pipelines.bench import BenchConfig, BenchResult, run_bench
from workbench.pipelines.calibrate import CalibrationConfig
from workbench.pipelines.directions import directions_for
from workbench.plots import layer_profile


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo job: the benchmark, sized to finish in minutes on two CPU cores."""

    bench: BenchConfig = field(default_factory=lambda: BenchConfig(
        targets=("hi", "es"), n_prompts=16, sweep_methods=("diffmean",), sweep_layers=(4, 6, 8),
        sweep_strengths=(0.5, 1.0),
        evaluation=EvaluationConfig(max_new_tokens=24, n_utility_texts=8),
        calibration=CalibrationConfig(n_prompts=8, max_new_tokens=12, n_utility_texts=6, layers=(4, 6, 8, 10),
                                      strengths=(0.5, 1.0, 1.5))))
    """What is benchmarked and how (see :class:`workbench.pipelines.bench.BenchConfig`)."""


def run_demo(out_dir: str | Path, config: DemoConfig = DemoConfig(), model: Any = None) -> BenchResult:
    out_dir = Path(out_dir)
    model = model or load_model(backend="hf")
    bench = config.bench
    profile = []
    for target in bench.targets:
        sets = directions_for(model, target, bench.source)
        for direction_set in sets.values():
            direction_set.save(out_dir / "directions" / target)
        profile += [{"layer": layer, "language": target, "distance": float(scale)}
                    for layer, scale in zip(sets["diffmean"].layers, sets["diffmean"].scale, strict=True)]
    figure = layer_profile(pd.DataFrame(profile), value="distance", title="How far each language sits from English",
                           y_title="‖mean(target) − mean(en)‖ at hook_resid_post")
    figure.update_yaxes(type="log")
    figure.write_html(out_dir / "directions_by_layer.html", include_plotlyjs="cdn")
    return run_bench(model, bench, out_dir)
