"""``workbench view mass|lens``: the language-mass views for one steering setting, as html, png and json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

view_app = typer.Typer(help="Language mass across generated steps (mass) or layers and positions (lens).",
                       no_args_is_help=True)
console = Console()
_METHOD = typer.Option("diffmean", help="Registered steering method.")
_TARGET = typer.Option(..., help="Target language code.")
_LAYER = typer.Option(None, help="Layer (default: the calibrated one).")
_STRENGTH = typer.Option(None, help="Strength (default: the calibrated one).")
_PROMPTS = typer.Option(16, help="Dev-split prompts averaged over.")
_LANGUAGES = typer.Option("", help="Languages shown (default: English, the target and its shipped relatives).")
_OUT = typer.Option(..., help="The figure's HTML file (a PNG and the numbers as JSON are written beside it).")
_MODEL = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory.")


@dataclass
class _Setting:
    model: Any
    prompts: list[str]
    steered_prompts: list[str]
    languages: list[str]
    label: str
    hooks: list[Any]
    layer: int | None
    target: str


def _setting(method: str, target: str, layer: int | None, strength: float | None, n_prompts: int, languages: str,
             model_name: str) -> _Setting:
    """One steering setting: inputs checked before the model loads, calibrated layer/strength when not given."""
    from workbench import corpus
    from workbench.calibration import calibrate
    from workbench.inputs import distinct_languages, finite, positive, unique
    from workbench.interventions import hooks_for
    from workbench.languages import CLOSE_RELATIVES, get_language
    from workbench.methods import get_method
    from workbench.models import load_model
    from workbench.prompting import qa_prompt

    target = get_language(target).code
    distinct_languages(target, "en")
    shipped = {row["code"] for row in corpus.stats()["languages"]}
    codes = unique([part.strip() for part in languages.split(",") if part.strip()], "--languages") or [
        "en", target, *[code for code in CLOSE_RELATIVES.get(target, ()) if code in shipped][:2]]
    codes = [get_language(code).code for code in codes]
    if target not in codes:
        codes.append(target)
    if strength is not None:
        finite(strength, "--strength")
    chosen = get_method(method)
    rows = corpus.prompts(split="dev", n=positive(n_prompts, "--n-prompts"))
    model = load_model(model_name, backend="hf")
    prompts = [qa_prompt(model, row.prompt) for row in rows]
    if chosen.tunable and (layer is None or strength is None):
        calibrated = calibrate(model, chosen, target, "en", rule=chosen.default_rule)
        layer = calibrated.layer if layer is None else layer
        strength = calibrated.strength if strength is None else strength
    strength = 1.0 if strength is None else strength
    treatment = chosen.treatment(model, target, "en", layer=layer, strength=strength, rule=chosen.default_rule)
    rewritten = [treatment.prompt_rewriter(p) for p in prompts] if treatment.prompt_rewriter else prompts
    label = method if layer is None else f"{method} L{layer} x{strength:g}"
    return _Setting(model, prompts, rewritten, codes, label, hooks_for(model, treatment.interventions), layer,
                    target)


def _write(figure: Any, numbers: dict[str, Any], out: Path) -> None:
    from workbench.artifacts import atomic_write_json, atomic_write_text
    from workbench.static_export import ExportError, write_static

    atomic_write_text(out, figure.to_html(include_plotlyjs="cdn"))
    atomic_write_json(out.with_suffix(".json"), numbers)
    try:
        write_static(figure, out.with_suffix(".png"))
    except ExportError as error:
        console.print(f"[yellow]{out.with_suffix('.png')} not written: {error}[/yellow]")
    console.print(f"written: {out} (+ .png, .json)")


@view_app.command("mass")
def mass_command(method: str = _METHOD, target: str = _TARGET, layer: int | None = _LAYER,
                 strength: float | None = _STRENGTH, n_prompts: int = _PROMPTS, languages: str = _LANGUAGES,
                 max_new_tokens: int = typer.Option(24, help="Greedy steps recorded."), out: Path = _OUT,
                 model: str = _MODEL) -> None:
    """Each language's next-token mass over the generated steps, steered vs unsteered (mean and 95% band)."""
    from workbench.inputs import positive
    from workbench.views import mass_trace, mass_trace_figure

    positive(max_new_tokens, "--max-new-tokens")
    setting = _setting(method, target, layer, strength, n_prompts, languages, model)
    traces = [mass_trace(setting.model, setting.prompts, languages=setting.languages, max_new_tokens=max_new_tokens),
              mass_trace(setting.model, setting.steered_prompts, languages=setting.languages, hooks=setting.hooks,
                         max_new_tokens=max_new_tokens, label=setting.label)]
    _write(mass_trace_figure(traces), {trace.label: {"languages": list(trace.languages),
                                                     "mass": trace.mass.tolist(), "tokens": trace.tokens}
                                       for trace in traces}, out)


@view_app.command("lens")
def lens_command(method: str = _METHOD, target: str = _TARGET, layer: int | None = _LAYER,
                 strength: float | None = _STRENGTH, n_prompts: int = _PROMPTS, languages: str = _LANGUAGES,
                 positions: int = typer.Option(8, help="Last prompt positions shown."), out: Path = _OUT,
                 model: str = _MODEL) -> None:
    """The target's logit-lens mass by layer x position, unsteered and steered side by side."""
    from workbench.inputs import positive
    from workbench.views import logit_lens_figure, logit_lens_mass

    positive(positions, "--positions")
    setting = _setting(method, target, layer, strength, n_prompts, languages, model)
    lenses = [logit_lens_mass(setting.model, setting.prompts, languages=setting.languages, n_positions=positions),
              logit_lens_mass(setting.model, setting.steered_prompts, languages=setting.languages,
                              hooks=setting.hooks, n_positions=positions, label=setting.label)]
    marked = [setting.layer] if setting.layer is not None else []
    _write(logit_lens_figure(lenses, language=setting.target, marked_layers=marked),
           {lens.label: {"languages": list(lens.languages), "mass": lens.mass.tolist(), "positions": lens.positions,
                         "norm": lens.norm} for lens in lenses}, out)
