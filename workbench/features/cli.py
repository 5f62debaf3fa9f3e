"""``workbench features`` and ``workbench ablate``: plain command functions (mounted by ``workbench.cli``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def features_command(
        target: str = typer.Option(..., "--target", help="Target language code (e.g. hi)."),
        sae_dir: Path | None = typer.Option(None, "--sae-dir", help="Directory written by 'workbench sae train', "
                                            "or released Gemma Scope 2 folders (one per site)."),
        out: Path = typer.Option(..., "--out", help="Output directory."),
        sae_release: str | None = typer.Option(None, "--sae-release", help="A SAELens release (needs the hub), "
                                               "e.g. gemma-scope-2-270m-pt-res-all; with --sae-id."),
        sae_id: str | None = typer.Option(None, "--sae-id", help="The SAE's id in --sae-release, e.g. "
                                          "layer_6_width_16k_l0_small."),
        sites: str = typer.Option("", help="Only these SAE sites (comma-separated); default all."),
        n_pairs: int = typer.Option(256, help="Parallel en/target pairs for selectivity."),
        n_candidates: int = typer.Option(32, help="Most selective features per side and site whose lift is measured."),
        n_prompts: int = typer.Option(8, help="Prompts the lift is averaged over."),
        n_ablation: int = typer.Option(4, help="Top features in the ablation heatmap (0: skip)."),
        ablation_tokens: int = typer.Option(400, help="Held-out tokens per language in the ablation study."),
        model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
        as_json: bool = typer.Option(False, "--json", help="Print features.json.")) -> None:
    """FOXP2 stage I + LangFIR: selectivity, lift, scores, LangFIR survivors, traced neurons, ablations."""
    from workbench.features.ablation import AblationConfig
    from workbench.features.analysis import FeatureAnalysisConfig, LiftConfig, run_feature_analysis, write_report
    from workbench.inputs import InputError, positive
    from workbench.languages import get_language
    from workbench.models import load_model
    from workbench.saes.io import checked_sae_directories, load_pretrained_sae, load_sae_dir, sae_hook_name

    get_language(target)
    for value, option in ((n_pairs, "--n-pairs"), (n_candidates, "--n-candidates"), (n_prompts, "--n-prompts"),
                          (ablation_tokens, "--ablation-tokens")):
        positive(value, option)
    if (sae_dir is None) == (sae_release is None) or (sae_release is None) != (sae_id is None):
        raise InputError("give the SAEs either as --sae-dir DIR or as --sae-release R --sae-id ID (not both)")
    if sae_dir is not None:
        checked_sae_directories(sae_dir, _split_list(sites) or None)
    config = FeatureAnalysisConfig(target=target, n_pairs=n_pairs, n_ablation_features=n_ablation,
                                   lift=LiftConfig(n_candidates=n_candidates, n_prompts=n_prompts),
                                   ablation=AblationConfig(tokens_per_language=ablation_tokens))
    loaded = load_model(model, backend="hf")
    if sae_dir is not None:
        saes = load_sae_dir(sae_dir, loaded, sites=_split_list(sites) or None)
    else:
        pretrained = load_pretrained_sae(sae_release, sae_id, loaded)
        saes = {sae_hook_name(pretrained): pretrained}
    report = run_feature_analysis(loaded, saes, config)
    write_report(report, out)
    if as_json:
        from workbench.artifacts import json_text

        print(json_text(report.to_dict()))
        return
    table = Table(title=f"top {target}/English features ({len(report.features)} kept)")
    for column in ("side", "site", "index", "Sel", "lift", "score", "fires tgt/en"):
        table.add_column(column)
    for side in ("target", "english"):
        for f in [f for f in report.features if f["side"] == side][:8]:
            table.add_row(side, f["site"], str(f["index"]), f"{f['selectivity']:.2f}", f"{f['lift']:.3g}",
                          f"{f['score']:.3g}", f"{f['firing_rate_target']:.0%}/{f['firing_rate_en']:.0%}")
    console.print(table)
    console.print(f"LangFIR survivors: {len(report.langfir)}; language neurons: {len(report.neurons)} "
                  f"(English side {len(report.english_neurons)})")
    for check in report.tracing_checks:
        console.print(f"tracing check {check['site']} #{check['feature']}: zeroing {check['n_neurons']} traced "
                      f"neurons moves it by {check['traced_shift']:.3f} vs {check['random_abs_shift_mean']:.3f} "
                      f"for random neurons (x{check['ratio']:.1f})")
    console.print(f"written to {out}/ (features.json, *.csv, selectivity_lift.html, layer_counts.html, "
                  "ablation_heatmap.html, dashboard.html)")


def ablate_command(
        sae_dir: Path = typer.Option(..., "--sae-dir", help="Directory written by 'workbench sae train'."),
        site: str = typer.Option(..., "--site", help="The SAE's site, e.g. 6.resid_post."),
        feature: list[int] = typer.Option(..., "--feature", help="Feature index (repeat for several)."),
        mode: str = typer.Option("zero", help="zero, clamp (to --value) or direction (LangFIR)."),
        value: float = typer.Option(0.0, help="Clamp value."),
        languages: str = typer.Option("en,hi,es,zh,ru,ar", help="Held-out languages."),
        tokens: int = typer.Option(400, help="Held-out tokens per language."),
        out: Path | None = typer.Option(None, help="Write ablation.json and ablation_heatmap.html here."),
        model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Ablate (or clamp) single features at their site; per-language change of held-out cross-entropy."""
    from workbench.artifacts import atomic_write_json, atomic_write_text
    from workbench.features.ablation import AblationConfig, ablation_study
    from workbench.features.plots import ablation_heatmap
    from workbench.inputs import finite, positive, unique
    from workbench.languages import get_language
    from workbench.models import load_model
    from workbench.saes.io import checked_sae_directories, load_sae_dir

    for code in unique(_split_list(languages), "--languages"):
        get_language(code)
    config = AblationConfig(languages=tuple(_split_list(languages)), tokens_per_language=positive(tokens, "--tokens"),
                            mode=mode, value=finite(value, "--value"))
    checked_sae_directories(sae_dir, [site])
    loaded = load_model(model, backend="hf")
    (name, sae), = load_sae_dir(sae_dir, loaded, sites=[site]).items()
    result = ablation_study(loaded, sae, feature, config)
    payload = result.to_dict()
    if out is not None:
        rows = [{"site": name, **row} for row in payload["features"]]
        atomic_write_json(Path(out) / "ablation.json", payload)
        atomic_write_text(Path(out) / "ablation_heatmap.html", ablation_heatmap(rows).to_html(include_plotlyjs="cdn"))
    if as_json:
        from workbench.artifacts import json_text

        print(json_text(payload))
        return
    table = Table(title=f"CE change (nats/token) when ablating features of {name} ({mode})")
    table.add_column("feature")
    for lang in result.languages:
        table.add_column(lang, justify="right")
    table.add_row("clean CE", *[f"{v:.3f}" for v in result.ce_clean.tolist()])
    for index, row in zip(result.features, result.delta_ce.tolist(), strict=True):
        table.add_row(f"#{index}", *[f"{v:+.4f}" for v in row])
    console.print(table)


card_app = typer.Typer(help="One unit on one page: an SAE latent's card.", no_args_is_help=True)


@card_app.command("feature")
def feature_card_command(
        sae_dir: Path = typer.Option(..., "--sae-dir", help="An SAE directory (or a directory of them)."),
        latent: int = typer.Option(..., "--latent", help="The latent's index."),
        out: Path = typer.Option(..., "--out", help="The card's HTML file (its JSON is written beside it)."),
        site: str = typer.Option("", help="The SAE's site when the directory holds several, e.g. 6.resid_post."),
        languages: str = typer.Option("en,hi,es,zh,ru,ar", help="Languages of the held-out text."),
        tokens: int = typer.Option(1500, help="Held-out tokens per language for the distribution and contexts."),
        ablation_tokens: int = typer.Option(400, help="Held-out tokens per language for the ablation (0: skip)."),
        report: Path | None = typer.Option(None, help="A features.json from 'workbench features' (adds its scores)."),
        model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory.")) -> None:
    """The card of one SAE latent: per-language firing and contexts, logit effects, ablation, analysis scores."""
    from workbench.artifacts import atomic_write_json, atomic_write_text, read_json
    from workbench.features.cards import feature_card, feature_card_html
    from workbench.inputs import InputError, positive, unique
    from workbench.languages import get_language
    from workbench.models import load_model
    from workbench.saes.io import checked_sae_directories, load_sae
    from workbench.views.contexts import CardConfig

    codes = tuple(get_language(code).code for code in unique(_split_list(languages), "--languages"))
    if latent < 0:
        raise InputError(f"--latent must be >= 0, got {latent}")
    if ablation_tokens < 0:
        raise InputError(f"--ablation-tokens must be >= 0, got {ablation_tokens}")
    config = CardConfig(languages=codes, tokens_per_language=positive(tokens, "--tokens"),
                        ablation_tokens=ablation_tokens)
    directories = checked_sae_directories(sae_dir, [site] if site else None)
    if len(directories) > 1:
        raise InputError(f"{sae_dir} holds SAEs for {', '.join(directories)}; pick one with --site")
    analysis = read_json(report) if report is not None else None
    loaded = load_model(model, backend="hf")
    card = feature_card(loaded, load_sae(next(iter(directories.values())), loaded), latent, config, report=analysis,
                        progress=True)
    atomic_write_text(out, feature_card_html(card))
    atomic_write_json(out.with_suffix(".json"), card.to_dict())
    console.print(f"{card.site} latent {latent}: fires on " + ", ".join(
        f"{lang} {rate:.1%}" for lang, rate in card.firing_rate.items()) + f"; written to {out}")


@card_app.command("neuron")
def neuron_card_command(
        layer: int = typer.Option(..., "--layer", help="The neuron's layer."),
        neuron: int = typer.Option(..., "--neuron", help="The neuron's index (0..d_mlp-1)."),
        out: Path = typer.Option(..., "--out", help="The card's HTML file (its JSON is written beside it)."),
        languages: str = typer.Option("en,hi,es,zh,ru,ar", help="Languages of the held-out text."),
        tokens: int = typer.Option(1500, help="Held-out tokens per language for the distribution and contexts."),
        ablation_tokens: int = typer.Option(400, help="Held-out tokens per language for the zeroing (0: skip)."),
        mask: list[Path] = typer.Option([], "--mask", help="A saved neuron mask folder (repeatable): membership."),
        model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory.")) -> None:
    """The card of one MLP neuron: activation probability and contexts per language, logit effects, zeroing."""
    from workbench.artifacts import atomic_write_json, atomic_write_text
    from workbench.inputs import InputError, positive, unique
    from workbench.languages import get_language
    from workbench.models import load_model
    from workbench.neurons.cards import neuron_card, neuron_card_html
    from workbench.neurons.masks import NeuronMask
    from workbench.views.contexts import CardConfig

    codes = tuple(get_language(code).code for code in unique(_split_list(languages), "--languages"))
    if layer < 0 or neuron < 0 or ablation_tokens < 0:
        raise InputError(f"--layer, --neuron and --ablation-tokens must be >= 0, got {layer}, {neuron}, "
                         f"{ablation_tokens}")
    masks = {f"{loaded.method} ({path.name})": loaded for path in mask for loaded in [NeuronMask.load(path)]}
    config = CardConfig(languages=codes, tokens_per_language=positive(tokens, "--tokens"),
                              ablation_tokens=ablation_tokens)
    card = neuron_card(load_model(model, backend="hf"), layer, neuron, config, masks=masks, progress=True)
    atomic_write_text(out, neuron_card_html(card))
    atomic_write_json(out.with_suffix(".json"), card.to_dict())
    console.print(f"neuron {layer}.{neuron}: active on " + ", ".join(
        f"{lang} {p:.1%}" for lang, p in card.activation_probability.items()) + f"; written to {out}")
