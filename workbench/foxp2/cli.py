"""``workbench foxp2``: the three FOXP2 stages, the trust region, controls and baselines for one target language."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from workbench import model_options

if TYPE_CHECKING:
    from workbench.saes.config import SAETrainConfig

console = Console()


def foxp2_command(
        target: str = typer.Option(..., help="Target language code (any language of the shipped corpus)."),
        out: Path = typer.Option(Path("figures/foxp2"), help="Output directory (a subdirectory per target)."),
        source: str = typer.Option("en", help="Language steered away from."),
        positions: str = typer.Option("all", help="all, or final+K (the prompt-final position and K decoding steps)."),
        positions_also: str = typer.Option("final+8", "--also-positions", help="Comma-separated position rules "
                                           "FOXP2 is also calibrated and evaluated under (empty: none)."),
        betas: str = typer.Option("0,0.25,0.5,0.75,1", help="Weights β of the English-feature suppression tried on "
                                  "dev jointly with λ; one value fixes β."),
        matchings: str = typer.Option("edit-norm,kl", help="Controls are also run at the λ matching FOXP2's mean edit "
                                      "norm and/or dev KL (comma-separated; empty: only at FOXP2's λ)."),
        gate: bool = typer.Option(False, help="Fit the instruction gate and run FOXP2 behind it."),
        strengths: str = typer.Option("0.05,0.1,0.2,0.5,1,2,4,8", help="Comma-separated λ tried on dev."),
        units: str = typer.Option("residual-norm", help="Strength units: residual-norm (v_tgt at each layer's median "
                                  "residual norm, λ / |W| per layer) or raw (the paper-literal multiple of v_tgt)."),
        rows: str = typer.Option("response", help="Stage II rows: response (first 3 answer positions of a shared "
                                 "question) or pooled (mean-pooled sentences, paper-literal)."),
        window: str | None = typer.Option(None, help="A fixed window FIRST-LAST instead of choosing it on dev."),
        window_search: str = typer.Option("grid", help="How the window is chosen on dev by J: grid (stage II's "
                                          "windows and a coarse grid), stage2 (stage II's windows only) or none "
                                          "(stage II's own window, no dev search)."),
        window_score: str = typer.Option("fisher", help="Score stage II's own window maximises: fisher, "
                                         "mass-excess or mass-x-stability (paper-literal)."),
        max_leakage: float = typer.Option(0.08, help="Leakage bound (raised to prompting's cost if larger)."),
        max_kl: float = typer.Option(0.08, help="KL bound, nats (raised to prompting's cost if larger)."),
        max_nll_delta: float = typer.Option(0.03, help="In-language NLL bound, nats/token (idem)."),
        controls: str = typer.Option(",".join(("positive-only", "negative-only", "random-support", "shifted-window",
                                                "diffmean-window")), help="Comma-separated controls."),
        baselines: str = typer.Option("none,prompt-en,prompt-native,diffmean",
                                      help="Comma-separated registered methods evaluated beside FOXP2."),
        n_prompts: int | None = typer.Option(None, help="Eval-split prompts per evaluation (default: all 74)."),
        n_dev_prompts: int = typer.Option(48, help="Dev-split prompts per trust-region evaluation."),
        pairs: int | None = typer.Option(None, help="Parallel pairs of stage II and stage I (default: 256)."),
        bootstraps: int | None = typer.Option(None, help="Bootstrap resamples of stage II's stability (default: 32)."),
        sae_latents: int | None = typer.Option(None, help="Latents per stage I SAE (default: 4x the site's width)."),
        sae_tokens: int | None = typer.Option(None, help="Corpus tokens the stage I SAEs train on, one epoch "
                                                         "(default: 2^20)."),
        saes: Path | None = typer.Option(None, "--saes", help="Stage I SAEs instead of training them: SAELens "
                                         "folders or released Gemma Scope 2 folders, one resid_post SAE per layer."),
        max_new_tokens: int = typer.Option(32, help="Greedy tokens per prompt on eval."),
        model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
        backend: str = typer.Option("hf", help="hooked, bridge or hf."),
        dtype: str = model_options.DTYPE, device_map: str | None = model_options.DEVICE_MAP,
        chat_template: bool = model_options.CHAT_TEMPLATE) -> None:
    """Neural FOXP2 for TARGET: spectra and window, SAE features, the signed sparse shift in its trust region,
    controls and baselines on eval; writes report.md, metrics.json, results.csv and figures."""
    from dataclasses import replace

    from workbench.evaluation import EvaluationConfig
    from workbench.foxp2.beta import BetaSearchConfig
    from workbench.foxp2.config import Foxp2Config
    from workbench.foxp2.method import UNITS
    from workbench.foxp2.pairs import POSITIONS
    from workbench.foxp2.pipeline import run_foxp2
    from workbench.foxp2.trust import TrustRegionConfig
    from workbench.foxp2.window import WindowSearchConfig
    from workbench.inputs import distinct_languages, finite, numbers, positive
    from workbench.languages import get_language
    from workbench.methods import get_methods
    from workbench.models import load_model
    from workbench.spectral import WINDOW_SCORES

    code = get_language(target).code
    placement = model_options.placement(dtype, device_map)
    get_language(source)
    distinct_languages(code, source)
    choices = {"--units": (units, UNITS), "--rows": (rows, POSITIONS),
               "--window-search": (window_search, ("grid", "stage2", "none")),
               "--window-score": (window_score, tuple(WINDOW_SCORES))}
    for option, (value, known) in choices.items():
        if value not in known:
            raise typer.BadParameter(f"{value!r}; use one of {', '.join(known)}", param_hint=option)
    fixed = None
    if window is not None:
        first, _, last = window.partition("-")
        if not (first.isdigit() and last.isdigit() and int(first) <= int(last)):
            raise typer.BadParameter(f"{window!r}; give FIRST-LAST layers, e.g. 4-9", param_hint="--window")
        fixed = (int(first), int(last))
    if saes is not None:
        from workbench.saes.io import checked_sae_directories

        checked_sae_directories(saes)
    beta_values = numbers(betas, "--betas", minimum=0)
    defaults = Foxp2Config()
    n_pairs = positive(pairs, "--pairs") if pairs is not None else defaults.pairs.n_pairs
    sae = defaults.localise.sae
    config = Foxp2Config(
        source=source, rule=positions, other_rules=_names(positions_also), beta=beta_values[0],
        beta_search=BetaSearchConfig(beta_values) if len(beta_values) > 1 else None, matchings=_names(matchings),
        gate=gate, units=units, window=fixed,
        window_search=None if window_search == "none" else WindowSearchConfig(grid=window_search == "grid"),
        pairs=replace(defaults.pairs, n_pairs=n_pairs, positions=rows),
        spectral=replace(defaults.spectral, window_score=window_score,
                         n_bootstrap=defaults.spectral.n_bootstrap if bootstraps is None
                         else positive(bootstraps, "--bootstraps")),
        localise=replace(defaults.localise, n_pairs=n_pairs if pairs is not None else defaults.localise.n_pairs,
                         sae_dir=None if saes is None else str(saes),
                         sae=_sized_saes(sae, sae_latents, sae_tokens)),
        trust=TrustRegionConfig(strengths=numbers(strengths, "--strengths", minimum=0),
                                max_leakage=finite(max_leakage, "--max-leakage", minimum=0),
                                max_kl=finite(max_kl, "--max-kl", minimum=0),
                                max_nll_delta=finite(max_nll_delta, "--max-nll-delta", minimum=0)),
        controls=_names(controls), baselines=_names(baselines),
        n_dev_prompts=positive(n_dev_prompts, "--n-dev-prompts"),
        n_prompts=None if n_prompts is None else positive(n_prompts, "--n-prompts"),
        evaluation=EvaluationConfig(max_new_tokens=positive(max_new_tokens, "--max-new-tokens")))
    get_methods(config.baselines)
    loaded = load_model(model, backend=backend, chat_template=chat_template, **placement)
    result = run_foxp2(loaded, code, out / code, config)
    console.print((result.out_dir / "report.md").read_text())
    console.print(f"report.md, metrics.json, results.csv and figures written to {result.out_dir}/")


def _sized_saes(sae: SAETrainConfig, latents: int | None, tokens: int | None) -> SAETrainConfig:
    """Stage I's SAE config with ``--sae-latents`` (a fixed width) and ``--sae-tokens`` (one epoch over that many
    tokens) applied."""
    from dataclasses import replace

    from workbench.inputs import positive

    if latents is not None:
        sae = replace(sae, d_sae=positive(latents, "--sae-latents"), expansion_factor=None)
    if tokens is not None:
        sae = replace(sae, n_tokens=positive(tokens, "--sae-tokens"), training_samples=tokens)
    return sae


def _names(text: str) -> tuple[str, ...]:
    """The comma-separated names of ``text`` (empty: none)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
