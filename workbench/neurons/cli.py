"""``workbench neurons {lape,ap90,clas,expertise}``: identify language neurons and write mask, summary, figures.

Mounted by the main CLI as ``app.add_typer(neurons_app, name="neurons")``. Heavy imports happen inside commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Language neurons: LAPE, activation probability 90p, CLAS categories, AP expertise.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

_LANGS = typer.Option("en,es,hi,zh,ja,ru,ar,de", "--langs", help="Comma-separated language codes.")
_OUT = typer.Option(Path("figures/neurons"), "--out", help="Output directory.")
_MODEL = typer.Option("gemma-3-270m", "--model", help="Model alias, TransformerLens name or HF directory.")
_BACKEND = typer.Option("hf", "--backend", help="hooked, bridge or hf (fastest).")
_TOKENS = typer.Option(200_000, "--tokens", help="Monolingual tokens per language (all of the split if fewer).")
_ITEMS = typer.Option(200, "--items", help="Parallel items per language for the pooled pass.")
_AS_JSON = typer.Option(False, "--json", help="Print the summary as JSON.")
_CACHE = typer.Option(None, "--cache", help="Cache root for the neuron artifacts (default: $WORKBENCH_CACHE).")
_HARVEST = typer.Option(None, "--harvest", help="Read the token statistics from this saved harvest (workbench harvest "
                        "--sites mlp_pre --kinds mlp_pre, e.g. under torchrun) instead of harvesting; --tokens unused.")


def _languages(text: str) -> tuple[str, ...]:
    from workbench.inputs import InputError, unique
    from workbench.languages import get_language

    codes = unique((code.strip() for code in text.split(",") if code.strip()), "--langs")
    if len(codes) < 2:
        raise InputError(f"--langs needs at least two language codes (comma-separated, e.g. en,hi), got {text!r}")
    return tuple(get_language(code).code for code in codes)


def _positive(value: int, option: str) -> int:
    from workbench.inputs import positive

    return positive(value, option)


def _finite(value: float, option: str) -> float:
    from workbench.inputs import finite

    return finite(value, option)


def _rate(value: float, option: str) -> float:
    from workbench.inputs import InputError, finite

    if not 0 < finite(value, option) <= 1:
        raise InputError(f"{option} must be a fraction in (0, 1], got {value:g}")
    return value


def _harvest(path: Path | None) -> Path | None:
    from workbench.inputs import InputError

    if path is not None and not (path / "stats.json").is_file():
        raise InputError(f"--harvest {path} is not a saved harvest (no stats.json); write one with workbench harvest "
                         "--langs ... --sites mlp_pre --kinds mlp_pre --out DIR")
    return path


def _run(method: str, out: Path, model_name: str, backend: str, as_json: bool, cache: Path | None,
         harvest: Path | None = None, **parts: Any) -> None:
    from workbench.models import load_model
    from workbench.neurons.pipeline import NeuronRunConfig, run_neurons

    config = NeuronRunConfig(**parts)
    harvest = _harvest(harvest)
    model = load_model(model_name, backend=backend)
    summary = run_neurons(method, out, config, model=model, cache_root=cache, harvest=harvest)
    if as_json:
        from workbench.artifacts import json_text

        print(json_text(summary))
        return
    _print_summary(summary, out)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{summary['method']}: {summary['n_selected']} distinct neurons "
                        f"({summary['n_layers']} layers x {summary['d_mlp']})")
    table.add_column("language")
    table.add_column("neurons", justify="right")
    for code, count in summary["per_language"].items():
        table.add_row(code, str(count))
    console.print(table)
    console.print(f"per layer: {summary['per_layer']}")
    if "bridge_layers" in summary:
        console.print(f"bridge layers: {summary['bridge_layers']}")
    if "causal" in summary:
        causal = summary["causal"]
        console.print(f"deactivation: the row language's own text is hurt most in {causal['rows_max_on_diagonal']}"
                      f"/{causal['n_languages']} rows; diagonal beats random in {causal['diagonal_exceeds_random']}")
    console.print(f"wrote {out}/summary.json, mask/ and {', '.join(summary['figures'])}")


@app.command("lape")
def lape_command(langs: str = _LANGS, out: Path = _OUT, model: str = _MODEL, backend: str = _BACKEND,
                 tokens: int = _TOKENS, top_rate: float = typer.Option(0.01, help="Fraction of all neurons kept."),
                 causal: bool = typer.Option(True, help="Deactivation perplexity matrix with a random control."),
                 n_eval_texts: int = typer.Option(16, help="Held-out texts per language for the perplexity matrix."),
                 compare: bool = typer.Option(True, help="Also run 90p and AP expertise and report overlaps."),
                 items: int = _ITEMS, seed: int = typer.Option(0, help="Seed of the random-neuron control."),
                 as_json: bool = _AS_JSON, cache: Path | None = _CACHE, harvest: Path | None = _HARVEST) -> None:
    """LAPE (Tang et al.): low-entropy activation-probability neurons, with the causal perplexity check."""
    from workbench.neurons.causal import CausalConfig
    from workbench.neurons.data import ParallelDataConfig, TokenDataConfig
    from workbench.neurons.lape import LapeConfig

    _run("lape", out, model, backend, as_json, cache, harvest, languages=_languages(langs),
         tokens=TokenDataConfig(tokens_per_language=_positive(tokens, "--tokens")),
         lape=LapeConfig(top_rate=_rate(top_rate, "--top-rate")), parallel=ParallelDataConfig(
             n_items=_positive(items, "--items")),
         causal=CausalConfig(n_texts=_positive(n_eval_texts, "--n-eval-texts"), seed=seed),
         run_causal=causal, compare_methods=compare)


@app.command("ap90")
def ap90_command(langs: str = _LANGS, out: Path = _OUT, model: str = _MODEL, backend: str = _BACKEND,
                 tokens: int = _TOKENS,
                 top_rate: float = typer.Option(0.00125, help="Fraction of all neurons kept per language."),
                 as_json: bool = _AS_JSON, cache: Path | None = _CACHE, harvest: Path | None = _HARVEST) -> None:
    """Activation probability 90p (Mondal et al.), the meaningful version (see workbench.neurons.actprob)."""
    from workbench.neurons.actprob import ActProbConfig
    from workbench.neurons.data import TokenDataConfig

    _run("ap90", out, model, backend, as_json, cache, harvest, languages=_languages(langs),
         tokens=TokenDataConfig(tokens_per_language=_positive(tokens, "--tokens")),
         ap90=ActProbConfig(top_rate=_rate(top_rate, "--top-rate")))


@app.command("clas")
def clas_command(langs: str = _LANGS, out: Path = _OUT, model: str = _MODEL, backend: str = _BACKEND,
                 items: int = _ITEMS, threshold: float = typer.Option(0.0, help="Item-level activity threshold."),
                 item_fraction: float = typer.Option(0.5, help="Share of items that makes a neuron active."),
                 bridge_width: int = typer.Option(3, help="Contiguous bridge layers chosen."),
                 as_json: bool = _AS_JSON, cache: Path | None = _CACHE) -> None:
    """CLAS categories per layer (dead / language-specific / partial-shared / all-shared) and bridge layers."""
    from workbench.neurons.clas import ClasConfig
    from workbench.neurons.data import ParallelDataConfig

    _run("clas", out, model, backend, as_json, cache, languages=_languages(langs),
         parallel=ParallelDataConfig(n_items=_positive(items, "--items")),
         clas=ClasConfig(threshold=_finite(threshold, "--threshold"),
                         item_fraction=_rate(item_fraction, "--item-fraction"),
                         bridge_width=_positive(bridge_width, "--bridge-width")))


@app.command("expertise")
def expertise_command(langs: str = _LANGS, out: Path = _OUT, model: str = _MODEL, backend: str = _BACKEND,
                      items: int = _ITEMS, top_n: int = typer.Option(100, help="Highest-AP neurons per language."),
                      bottom_n: int = typer.Option(100, help="Lowest-AP neurons per language."),
                      as_json: bool = _AS_JSON, cache: Path | None = _CACHE) -> None:
    """AP expertise (Kojima et al.): neurons whose sentence response best separates each language."""
    from workbench.neurons.data import ParallelDataConfig
    from workbench.neurons.expertise import ExpertiseConfig

    _run("expertise", out, model, backend, as_json, cache, languages=_languages(langs),
         parallel=ParallelDataConfig(n_items=_positive(items, "--items")),
         expertise=ExpertiseConfig(top_n=_positive(top_n, "--top-n"), bottom_n=_positive(bottom_n, "--bottom-n")))
