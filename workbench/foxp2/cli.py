"""``workbench foxp2``: the three FOXP2 stages, the trust region, controls and baselines for one target language."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def foxp2_command(
        target: str = typer.Option(..., help="Target language code (any language of the shipped corpus)."),
        out: Path = typer.Option(Path("figures/foxp2"), help="Output directory (a subdirectory per target)."),
        source: str = typer.Option("en", help="Language steered away from."),
        positions: str = typer.Option("all", help="all, or final+K (the prompt-final position and K decoding steps)."),
        beta: float = typer.Option(1.0, help="Weight of the English-feature suppression."),
        gate: bool = typer.Option(False, help="Fit the instruction gate and run FOXP2 behind it."),
        strengths: str = typer.Option("0.05,0.1,0.2,0.35,0.5,0.75,1", help="Comma-separated λ tried on dev."),
        max_leakage: float = typer.Option(0.08, help="Leakage bound (raised to prompting's cost if larger)."),
        max_kl: float = typer.Option(0.08, help="KL bound, nats (raised to prompting's cost if larger)."),
        max_nll_delta: float = typer.Option(0.03, help="In-language NLL bound, nats/token (idem)."),
        controls: str = typer.Option(",".join(("positive-only", "negative-only", "random-support", "shifted-window",
                                                "diffmean-window")), help="Comma-separated controls."),
        baselines: str = typer.Option("none,prompt-en,prompt-native,diffmean",
                                      help="Comma-separated registered methods evaluated beside FOXP2."),
        n_prompts: int | None = typer.Option(None, help="Eval-split prompts per evaluation (default: all 74)."),
        max_new_tokens: int = typer.Option(32, help="Greedy tokens per prompt on eval."),
        model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
        backend: str = typer.Option("hf", help="hooked, bridge or hf.")) -> None:
    """Neural FOXP2 for TARGET: spectra and window, SAE features, the signed sparse shift in its trust region,
    controls and baselines on eval; writes report.md, metrics.json, results.csv and figures."""
    from workbench.evaluation import EvaluationConfig
    from workbench.foxp2.config import Foxp2Config
    from workbench.foxp2.pipeline import run_foxp2
    from workbench.foxp2.trust import TrustRegionConfig
    from workbench.languages import get_language
    from workbench.methods import get_methods
    from workbench.models import load_model

    code = get_language(target).code
    get_language(source)
    config = Foxp2Config(
        source=source, rule=positions, beta=beta, gate=gate,
        trust=TrustRegionConfig(strengths=_numbers(strengths), max_leakage=max_leakage, max_kl=max_kl,
                                max_nll_delta=max_nll_delta),
        controls=tuple(part.strip() for part in controls.split(",") if part.strip()),
        baselines=tuple(part.strip() for part in baselines.split(",") if part.strip()),
        n_prompts=n_prompts, evaluation=EvaluationConfig(max_new_tokens=max_new_tokens))
    get_methods(config.baselines)
    result = run_foxp2(load_model(model, backend=backend), code, out / code, config)
    console.print((result.out_dir / "report.md").read_text())
    console.print(f"report.md, metrics.json, results.csv and figures written to {result.out_dir}/")
