"""``workbench evaluation validate-relevance``: a typer sub-app (mounted by ``workbench.cli``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.evaluation.validation import MAX_SPREAD, REQUIRED_AUC, VALIDATION_LANGUAGES

evaluation_app = typer.Typer(help="Check the evaluation's metrics on real data.", no_args_is_help=True)
console = Console()
SCORERS: tuple[str, ...] = ("e5-linear", "e5-percentile", "retrieval", "conditional-likelihood")


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@evaluation_app.command("validate-relevance")
def validate_relevance_command(
        out: Path = typer.Option(Path("out/relevance-validation"), help="Output directory."),
        languages: str = typer.Option(",".join(VALIDATION_LANGUAGES), help="Languages of the held-out pairs."),
        scorers: str = typer.Option(",".join(SCORERS), help=f"Scorers to compare: {', '.join(SCORERS)}."),
        n_rows: int = typer.Option(100, help="Held-out parallel rows per language (eval split)."),
        model: str = typer.Option("gemma-3-270m", help="Model of the retrieval and conditional-likelihood scorers."),
) -> None:
    """AUC of matched vs shuffled translation pairs, mean score of human translations and their spread across
    languages, for every scorer; the default (e5-linear) must reach AUC >= 0.9 everywhere and a spread <= 0.15."""
    from workbench.evaluation.evaluate import EvaluationConfig
    from workbench.evaluation.validation import validate_relevance
    from workbench.inputs import InputError, unique
    from workbench.languages import get_language

    names = _split(scorers)
    unknown = [name for name in names if name not in SCORERS]
    if unknown or not names:
        raise typer.BadParameter(f"unknown scorer(s) {unknown}; choose from {', '.join(SCORERS)}", param_hint="scorers")
    codes = [get_language(code).code for code in unique(_split(languages), "--languages")]
    if n_rows < 2:
        raise InputError(f"--n-rows must be at least 2 (matched vs shuffled pairs need two rows), got {n_rows}")
    loaded = None
    if {"retrieval", "conditional-likelihood"} & set(names):
        from workbench.models import load_model

        loaded = load_model(model, backend="hf")
    report = validate_relevance([EvaluationConfig(relevance=name).relevance_scorer(loaded) for name in names], codes,
                                n_rows=n_rows)
    report.write(out)
    table = Table("scorer", "language", "n", "AUC", "translations", "shuffled", title="Relevance on held-out pairs")
    for row in report.rows:
        table.add_row(row.scorer, row.language, str(row.n_pairs), f"{row.auc:.3f}", f"{row.translation_mean:.3f}",
                      f"{row.shuffled_mean:.3f}")
    console.print(table)
    for name in names:
        verdict = "meets" if report.passes(name) else "misses"
        console.print(f"{name}: spread {report.spread(name):.3f}; {verdict} the bar (AUC >= {REQUIRED_AUC} in every "
                      f"language, spread <= {MAX_SPREAD})")
    console.print(f"relevance_validation.csv / .json / .html / .png in {out}/")
