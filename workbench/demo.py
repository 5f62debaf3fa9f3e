"""The demo job (``make demo``): Neural FOXP2 for Hindi and Spanish on the embedded model, with its controls and
the steering engine's baselines, sized to finish in minutes on two CPU cores.

For each target, :func:`workbench.foxp2.run_foxp2` (stages II, I and III, the trust region on dev, FOXP2 + controls +
no steering, both prompting baselines and calibrated DiffMean on eval) writes ``foxp2/<target>/``; the benchmark
runner adds the other residual directions (PCA, LDA, probe) under ``bench/``. The demo's own ``results.csv``,
``metrics.json`` and ``demo.md`` (the leaderboard of every row, in the shared result schema of
:mod:`workbench.evaluation.results`, with links to the FOXP2 reports) are built from both runs' result rows;
``directions_by_layer.html`` shows how far each language sits from English by layer; the paper figures (html, png,
svg) are regenerated from all of it into ``paper/``; ``timings.json`` holds each stage's wall time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from workbench.artifacts import atomic_write_json
from workbench.backends import Model
from workbench.bench import BenchConfig, BenchResult, run_bench
from workbench.calibration import CalibrationConfig
from workbench.directions import directions_for
from workbench.evaluation import EvaluationConfig
from workbench.evaluation.results import write_results
from workbench.figures import regenerate
from workbench.foxp2.config import Foxp2Config, Foxp2Result
from workbench.foxp2.pairs import PairDataConfig
from workbench.foxp2.pipeline import run_foxp2
from workbench.foxp2.report import result_rows
from workbench.foxp2.sae_features import LocaliseConfig
from workbench.foxp2.trust import TrustRegionConfig
from workbench.foxp2.window import WindowSearchConfig
from workbench.models import load_model
from workbench.plots import layer_profile
from workbench.saes.config import SAETrainConfig
from workbench.spectral import SpectralConfig

DEMO_CALIBRATION = CalibrationConfig(n_prompts=8, max_new_tokens=12, n_utility_contexts=6, layers=(4, 8),
                                     strengths=(1.0, 4.0))
"""Dev-split calibration of the direction baselines (shared by FOXP2's DiffMean and the benchmark's methods): two
layers and two strengths around where the full benchmark calibrated DiffMean (L2-L4, x0.75-1); x4 gives PCA, LDA
and the probe, whose natural scale is small, a chance to move the language."""
DEMO_EVALUATION = EvaluationConfig(max_new_tokens=24, n_utility_contexts=8)
"""Eval-split settings of every evaluation in the demo."""
DEMO_WINDOW_WIDTH = 3
"""The demo's windows have exactly 3 layers (stage II's shortest): stage I trains an SAE for every layer of the
window and of the shifted-window control, and Spanish's unconstrained window (0-10) made that 18 SAEs and the
demo ~50 minutes cold (35 with this cap); ``workbench foxp2`` searches windows of 3-12 layers."""
DEMO_SAES = SAETrainConfig(d_sae=1024, k=32, n_tokens=40_000, training_samples=120_000)
"""Half-size SAEs (1024 latents, 120k samples: ~4x faster to train than the default) so that a fresh machine
trains the six SAEs of each target (window and shifted window, :data:`DEMO_WINDOW_WIDTH` layers each) within the
demo's budget; ``workbench foxp2`` uses the full default."""


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo job: FOXP2 with every control and baseline, sized for < 20 minutes on 2 CPU cores."""

    targets: tuple[str, ...] = ("hi", "es")
    """Target languages."""
    foxp2: Foxp2Config = field(default_factory=lambda: Foxp2Config(
        pairs=PairDataConfig(n_pairs=128), spectral=SpectralConfig(n_bootstrap=16, max_width=DEMO_WINDOW_WIDTH),
        localise=LocaliseConfig(sae=DEMO_SAES, n_lift_candidates=16),
        trust=TrustRegionConfig(strengths=(0.2, 0.5, 1.0, 2.0, 4.0, 8.0)), window_search=WindowSearchConfig(grid=False),
        beta_search=None, other_rules=(), matchings=(), n_dev_prompts=8,
        dev_evaluation=EvaluationConfig(max_new_tokens=12, n_utility_contexts=6, utility_split="dev"),
        n_prompts=16, evaluation=DEMO_EVALUATION, calibration=DEMO_CALIBRATION))
    """FOXP2 per target (see :class:`workbench.foxp2.Foxp2Config`). Sized for the budget: β fixed at 1, positions
    ``all`` only, the controls at FOXP2's λ only; ``workbench foxp2`` adds β on dev, ``final+8`` and the controls at
    matched edit norm and KL."""
    bench: BenchConfig = field(default_factory=lambda: BenchConfig(
        methods=("none", "pca", "lda", "probe"), targets=("hi", "es"), n_prompts=16, evaluation=DEMO_EVALUATION,
        calibration=DEMO_CALIBRATION))
    """The residual-direction baselines FOXP2 does not run itself."""


@dataclass
class DemoResult:
    foxp2: dict[str, Foxp2Result]
    bench: BenchResult
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage, in order (also written to ``timings.json``)."""


class _StageClock:
    """Wall time per named stage, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started


def write_demo_results(foxp2: dict[str, Foxp2Result], bench: BenchResult, config: DemoConfig, out_dir: Path) -> None:
    """``results.csv``, ``metrics.json`` and ``demo.md``: FOXP2's rows (FOXP2, controls, baselines) and the
    benchmark's calibrated rows together, one leaderboard per target."""
    rows = [row for result in foxp2.values() for row in result_rows(result)]
    seen = {(row.target, row.method) for row in rows}
    rows += [row for row in bench.rows if row.selection != "sweep" and (row.target, row.method) not in seen]
    metrics = {target: dict(by_method) for target, by_method in bench.leaderboard.items()}
    for target, result in foxp2.items():
        metrics.setdefault(target, {}).update(result.metrics)
    intro = (f"FOXP2 at its trust-region λ with its controls at the same λ, and every baseline at its calibrated "
             f"setting, on {config.foxp2.n_prompts} eval prompts per target ({config.foxp2.evaluation.max_new_tokens} "
             "greedy tokens; 95% intervals). Stage-by-stage reports: "
             + ", ".join(f"[{t}](foxp2/{t}/report.md)" for t in foxp2) + "; benchmark: [bench](bench/leaderboard.md).")
    write_results(rows, metrics, out_dir, title="make demo: Neural FOXP2 and the baselines", intro=intro,
                  extra={"targets": list(config.targets)}, leaderboard_name="demo.md")


def run_demo(out_dir: str | Path, config: DemoConfig = DemoConfig(), model: Model | None = None) -> DemoResult:
    """FOXP2 per target, then the benchmark of the other directions; writes everything under ``out_dir``."""
    out_dir = Path(out_dir)
    clock = _StageClock()
    with clock.stage("load the model"):
        model = model or load_model(backend="hf")
    results = {}
    for target in config.targets:
        with clock.stage(f"FOXP2 -> {target} (stages II, I, III, controls, baselines)"):
            results[target] = run_foxp2(model, target, out_dir / "foxp2" / target, config.foxp2)
    with clock.stage(f"benchmark of {', '.join(m for m in config.bench.methods if m != 'none')}"):
        bench = run_bench(model, config.bench, out_dir / "bench")
    with clock.stage("tables and figures"):
        profile = []
        for target in config.targets:
            diffmean = directions_for(model, target, config.foxp2.source)["diffmean"]
            profile += [{"layer": layer, "language": target, "distance": float(scale)}
                        for layer, scale in zip(diffmean.layers, diffmean.scale, strict=True)]
        figure = layer_profile(pd.DataFrame(profile), value="distance",
                               title="How far each language sits from English",
                               y_title="natural scale (μ_target − μ_en)·u at hook_resid_post")
        figure.update_yaxes(type="log")
        figure.write_html(out_dir / "directions_by_layer.html", include_plotlyjs="cdn")
        write_demo_results(results, bench, config, out_dir)
        regenerate(out_dir)
    atomic_write_json(out_dir / "timings.json", {"stage_seconds": clock.seconds,
                                                 "total_seconds": sum(clock.seconds.values())})
    return DemoResult(results, bench, clock.seconds)
