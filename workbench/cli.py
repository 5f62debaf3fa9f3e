"""The ``workbench`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.table import Table

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
        print(json.dumps(payload, indent=2))
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
        print(json.dumps(summary, indent=2, ensure_ascii=False))
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
def demo(out: Path = typer.Option(Path("figures"), help="Output directory."),
         layer: int = typer.Option(6, help="Layer of hook_resid_post to steer."),
         strength: float = typer.Option(1.0, help="Multiple of the raw DiffMean vector."),
         n_prompts: int = typer.Option(4, help="English eval prompts.")) -> None:
    """Harvest, build DiffMean directions for Hindi and Spanish, steer English prompts, write a figure."""
    from workbench.pipelines.demo import DemoConfig, run_demo

    result = run_demo(out, DemoConfig(layer=layer, strength=strength, n_prompts=n_prompts))
    for index, prompt in enumerate(result["prompts"]):
        table = Table(title=prompt.replace("\n", " "), show_lines=True)
        table.add_column("steering")
        table.add_column("greedy continuation")
        for method, outputs in result["generations"].items():
            label = "none" if method == "none" else f"DiffMean → {method} @ {result['site']} ×{result['strength']}"
            table.add_row(label, outputs[index].strip())
        console.print(table)
    console.print(f"artifacts and figure written to {out}/")


def main() -> None:
    """Console entry point: the workbench's input errors print as one clear line, without a traceback."""
    from workbench.errors import WorkbenchError

    try:
        app(standalone_mode=False)
    except WorkbenchError as error:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {error}")
        raise SystemExit(2) from None
    except (typer.Exit, typer.Abort) as stop:
        raise SystemExit(getattr(stop, "exit_code", 1)) from None
    except click.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None


if __name__ == "__main__":
    main()
