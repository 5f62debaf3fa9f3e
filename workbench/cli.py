"""The ``workbench`` command line."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from rich.console import Console
from rich.table import Table

from workbench import model_options
from workbench.evaluation.cli import evaluation_app
from workbench.export_cli import export_command
from workbench.features.cli import ablate_command, card_app, features_command
from workbench.foxp2.cli import foxp2_command
from workbench.harvest_cli import harvest_command
from workbench.neurons.cli import app as neurons_app
from workbench.saes.cli import sae_app
from workbench.store_cli import cache_app
from workbench.transfer.cli import transfer_command, transfer_compare_command
from workbench.views.cli import view_app

app = typer.Typer(help="Study and steer which language a multilingual LLM speaks.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
console = Console()


@app.command()
def info(model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
         backend: str = typer.Option("hf", help="hooked, bridge or hf."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The model (name, layers, widths, vocabulary, cache path, backend) and the corpus summary."""
    from workbench import corpus
    from workbench.models import load_model, model_metadata

    loaded = load_model(model, backend=backend)
    summary = corpus.stats()
    payload = {"model": model_metadata(loaded), "load_seconds": round(loaded.workbench_load_seconds, 2),
               "corpus": {"languages": len(summary["languages"]), "udhr_languages": summary["udhr_languages"],
                          "prompts": summary["prompts"]}}
    if as_json:
        from workbench.artifacts import json_text

        print(json_text(payload))
        return
    table = Table(title="model", show_header=False)
    for key, value in {**payload["model"], "load_seconds": payload["load_seconds"]}.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"corpus: {payload['corpus']['languages']} languages, UDHR in "
                  f"{payload['corpus']['udhr_languages']} languages, {payload['corpus']['prompts']} prompts "
                  "(details: workbench corpus)")


@app.command("corpus")
def corpus_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Per-language counts of the shipped corpus, per split and kind."""
    from workbench import corpus

    summary = corpus.stats()
    if as_json:
        from workbench.artifacts import json_text

        print(json_text(summary))
        return
    splits = list(summary["splits"])
    table = Table(title="shipped corpus (parallel rows with English / monolingual tokens, per split)")
    for column in ["code", "name", "script", *[f"parallel {s}" for s in splits],
                   *[f"tokens {s}" for s in splits], "prompts w/ reference"]:
        table.add_column(column, justify="left" if column in ("code", "name", "script") else "right")
    for language in summary["languages"]:
        table.add_row(language["code"], language["name"], language["script"],
                      *[str(language["parallel_by_split"].get(s, 0)) for s in splits],
                      *[f"{language['monolingual_tokens_by_split'].get(s, 0):,}" for s in splits],
                      str(language["prompts_with_reference"]))
    console.print(table)
    prompt_counts = ", ".join(f"{s} {summary['splits'][s]['prompts']}" for s in splits)
    console.print(f"UDHR: {summary['udhr_languages']} languages ({summary['udhr_versions']} versions); "
                  f"prompts: {summary['prompts']} ({prompt_counts})")


@app.command()
def demo(out: Path = typer.Option(Path("figures"), help="Output directory.")) -> None:
    """Neural FOXP2 for Hindi and Spanish with its controls and every baseline: reports, tables and figures."""
    from workbench.demo import run_demo

    result = run_demo(out)
    console.print((out / "demo.md").read_text())
    for target, run in result.foxp2.items():
        foxp2, diffmean = run.metrics["foxp2"], run.metrics["diffmean"]
        console.print(f"[bold]{target}[/bold]: window {run.window[0]}-{run.window[1]}, λ {run.strength:g}; FOXP2 LID "
                      f"{foxp2['lid_success']:.2f} score {foxp2['steering_score']:.2f} | DiffMean LID "
                      f"{diffmean['lid_success']:.2f} score {diffmean['steering_score']:.2f}")
    console.print(f"demo.md, foxp2/<target>/ (report.md, metrics.json, figures) and bench/ written to {out}/")
    timings = Table(title="Wall time per stage (also in timings.json)")
    timings.add_column("stage")
    timings.add_column("time", justify="right")
    for stage, seconds in [*result.stage_seconds.items(), ("total", sum(result.stage_seconds.values()))]:
        timings.add_row(stage, f"{seconds // 60:.0f} min {seconds % 60:04.1f} s")
    console.print(timings)


@app.command()
def figures(out: Path = typer.Option(Path("figures"), help="Output directory; figures go to OUT/paper/."),
            artifacts: Path | None = typer.Option(None, help="Where the runs' artifacts are (default: OUT)."),
            formats: str = typer.Option("html,png,svg", help="Comma-separated: html, png, svg, pdf.")) -> None:
    """Regenerate every paper figure from cached artifacts: interactive html and static images."""
    from workbench.figures import regenerate

    records = regenerate(out, artifacts, formats=_split(formats))
    for record in records:
        console.print(f"{record['figure']}: {', '.join(record['files'])}" if "figure" in record else
                      f"[yellow]{record['family']}[/yellow]: {record['skipped']}")
    console.print(f"{sum('figure' in r for r in records)} figures in {out / 'paper'}/ (manifest.json lists them)")


def _read_prompts(prompt: list[str] | None, prompts_file: Path | None) -> list[str]:
    from workbench.inputs import InputError, non_blank, read_prompts_file

    texts = non_blank(prompt or [], "--prompt")
    if prompts_file is not None:
        texts += read_prompts_file(prompts_file)
    if not texts:
        raise InputError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE (one per line, "
                         "or JSON lines with a 'prompt' field)")
    return texts


@app.command()
def steer(method: str = typer.Option("diffmean", help="none, prompt-en, prompt-native, diffmean, pca, lda, probe, "
                                                       "lape, clas, foxp2 (and its controls foxp2-<control>), or "
                                                       "any registered method."),
          target: str = typer.Option(..., help="Target language code (any language of the shipped corpus)."),
          source: str = typer.Option("en", help="Language steered away from."),
          layer: int | None = typer.Option(None, help="Layer; default: the calibrated one."),
          strength: float | None = typer.Option(None, help="Strength; default: the calibrated one."),
          positions: str | None = typer.Option(None, help="all, final or final+K (default: the method's)."),
          prompt: list[str] | None = typer.Option(None, help="A prompt (repeatable)."),
          prompts_file: Path | None = typer.Option(None, help="One prompt per line, or JSON lines with 'prompt'."),
          raw: bool = typer.Option(False, help="Use prompts as given, without the 'Q: ...\\nA:' (or chat) template."),
          max_new_tokens: int = typer.Option(32, help="Greedy tokens per prompt."),
          model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
          backend: str = typer.Option("hf", help="hooked, bridge or hf."),
          dtype: str = model_options.DTYPE, device_map: str | None = model_options.DEVICE_MAP,
          chat_template: bool = model_options.CHAT_TEMPLATE,
          as_json: bool = typer.Option(False, "--json", help="Print results and the evaluation summary as JSON.")
          ) -> None:
    """Steer prompts towards a target language and print the generations (with --json, also the evaluation)."""
    from workbench.artifacts import json_text
    from workbench.calibration import calibrate
    from workbench.evaluation import EvaluationConfig, evaluate, identify_language
    from workbench.generation import generate
    from workbench.inputs import distinct_languages, finite, positive
    from workbench.interventions import PositionRule, hooks_for
    from workbench.languages import get_language
    from workbench.methods import get_method
    from workbench.models import load_model
    from workbench.prompting import qa_prompt

    placement = model_options.placement(dtype, device_map)
    for code in (target, source):
        get_language(code)
    distinct_languages(target, source)
    if strength is not None:
        finite(strength, "--strength")
    positive(max_new_tokens, "--max-new-tokens")
    evaluation = EvaluationConfig(max_new_tokens=max_new_tokens) if as_json else None
    chosen = get_method(method)
    rule = PositionRule.parse(positions) if positions else chosen.default_rule
    texts = _read_prompts(prompt, prompts_file)
    loaded = load_model(model, backend=backend, chat_template=chat_template, **placement)
    prompts = texts if raw else [qa_prompt(loaded, text) for text in texts]
    calibrated = None
    if chosen.tunable and (layer is None or strength is None):
        calibrated = calibrate(loaded, chosen, target, source, rule=rule)
        layer = calibrated.layer if layer is None else layer
        strength = calibrated.strength if strength is None else strength
    strength = 1.0 if strength is None else strength
    treatment = chosen.treatment(loaded, target, source, layer=layer, strength=strength, rule=rule)
    hooks = hooks_for(loaded, treatment.interventions)
    setting = {"method": method, "target": target, "source": source, "layer": layer, "strength": strength,
               "positions": str(rule), "treatment": treatment.description,
               "calibrated": calibrated is not None}
    if as_json:
        metrics = evaluate(loaded, prompts, target, source=source, hooks=hooks,
                           prompt_rewriter=treatment.prompt_rewriter, config=evaluation or EvaluationConfig())
        results = [{"prompt": r["prompt"], "output": r["output"], "lid": r["lid"]} for r in metrics.records]
        print(json_text({"results": results, "summary": metrics.to_dict(with_records=False), "setting": setting}))
        return
    rewritten = [treatment.prompt_rewriter(p) for p in prompts] if treatment.prompt_rewriter else prompts
    outputs = generate(loaded, rewritten, hooks=hooks, max_new_tokens=max_new_tokens)
    languages = identify_language(outputs, candidates=list(dict.fromkeys(["en", "es", "hi", "zh", "ja", "ru", "ar",
                                                                          "de", "fr", target, source])))
    table = Table(title=treatment.description or method, show_lines=True)
    for column in ("prompt", "output", "lid"):
        table.add_column(column)
    for text, output, lang in zip(rewritten, outputs, languages, strict=True):
        table.add_row(text, output.strip(), lang)
    console.print(table)


@app.command()
def bench(methods: str = typer.Option("", help="Comma-separated method names (default: every compared method)."),
          targets: str = typer.Option("", help="Comma-separated target language codes (default: hi,es,zh)."),
          out: Path = typer.Option(Path("figures/bench"), help="Output directory."),
          n_prompts: int | None = typer.Option(None, help="Eval-split prompts per evaluation (default: all 74)."),
          positions: str | None = typer.Option(None, help="all, final or final+K for every method."),
          sweep: str = typer.Option("", help="Methods whose layer x strength grid is also evaluated on eval."),
          sweep_layers: str = typer.Option("", help="Comma-separated sweep layers (default: calibration grid)."),
          sweep_strengths: str = typer.Option("", help="Comma-separated sweep strengths (default: grid)."),
          max_new_tokens: int = typer.Option(32, help="Greedy tokens per prompt on eval."),
          model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
          backend: str = typer.Option("hf", help="hooked, bridge or hf."),
          dtype: str = model_options.DTYPE, device_map: str | None = model_options.DEVICE_MAP,
          chat_template: bool = model_options.CHAT_TEMPLATE) -> None:
    """Calibrate on dev and evaluate on eval: results.csv, leaderboard.md, metrics.json and heatmaps."""
    from workbench.bench import BenchConfig, run_bench
    from workbench.evaluation import EvaluationConfig
    from workbench.inputs import integers, numbers, positive, unique
    from workbench.models import load_model

    placement = model_options.placement(dtype, device_map)
    config = BenchConfig(
        methods=tuple(unique(_split(methods), "--methods")) or BenchConfig.methods,
        targets=tuple(unique(_split(targets), "--targets")) or BenchConfig.targets,
        n_prompts=None if n_prompts is None else positive(n_prompts, "--n-prompts"), rule=positions,
        sweep_methods=_split(sweep), sweep_layers=integers(sweep_layers, "--sweep-layers") or None,
        sweep_strengths=numbers(sweep_strengths, "--sweep-strengths") if sweep_strengths.strip() else None,
        evaluation=EvaluationConfig(max_new_tokens=positive(max_new_tokens, "--max-new-tokens")))
    from workbench.methods import get_methods

    get_methods(config.methods)
    result = run_bench(load_model(model, backend=backend, chat_template=chat_template, **placement), config, out)
    console.print((out / "leaderboard.md").read_text())
    console.print(f"{len(result.table)} evaluations; results.csv, leaderboard.md, metrics.json and figures in {out}/")


app.add_typer(neurons_app, name="neurons")
app.add_typer(sae_app, name="sae")
app.add_typer(cache_app, name="cache")
app.add_typer(evaluation_app, name="evaluation")
app.add_typer(card_app, name="card")
app.add_typer(view_app, name="view")
app.command("features")(features_command)
app.command("ablate")(ablate_command)
app.command("foxp2")(foxp2_command)
app.command("transfer")(transfer_command)
app.command("transfer-compare")(transfer_compare_command)
app.command("harvest")(harvest_command)
app.command("export")(export_command)


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def main() -> None:
    """Console entry point: the workbench's input errors print as one clear line, without a traceback."""
    from workbench.errors import WorkbenchError

    try:
        app(prog_name="workbench", standalone_mode=False)
    except WorkbenchError as error:
        _print_error(str(error))
        raise SystemExit(2) from None
    except (typer.Exit, typer.Abort) as stop:
        raise SystemExit(getattr(stop, "exit_code", 1)) from None
    except (click.ClickException, typer.exceptions.TyperException) as error:  # typer vendors its own click
        context = getattr(error, "ctx", None)
        hint = f" (see: {context.command_path} --help)" if context is not None else ""
        _print_error(f"{error.format_message()}{hint}")
        raise SystemExit(getattr(error, "exit_code", 2)) from None


def _print_error(message: str) -> None:
    """One line on stderr, however wide the terminal."""
    from rich.text import Text

    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error:", "bold red"), " ", " ".join(message.split())))


if __name__ == "__main__":
    main()
