"""``workbench transfer``: zero-shot cross-lingual transfer with and without neuron interventions."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def transfer_command(
        task: str = typer.Option("module", help="module (help-module classification, paired accuracy) or translate "
                                 "(few-shot en -> X, chrF / BLEU)."),
        targets: str = typer.Option("hi,es,de,zh,ko,ja,ar", help="Comma-separated target languages."),
        methods: str = typer.Option("none,clas,lape-mean,lape-zero,random-lape-mean,random-lape-zero",
                                    help="Comma-separated test-time interventions: none, clas, "
                                    "<lape|ap90>-<mean|p90|p10|zero>, random-<lape|ap90>-<value>."),
        adapt: str = typer.Option("probe", help="Module task: probe (frozen model), lora or masked-lora."),
        mask: str = typer.Option("lape", help="Masked LoRA's neurons: lape, ap90, random-lape or random-ap90."),
        out: Path = typer.Option(Path("figures/transfer"), help="Output directory."),
        n_train: int = typer.Option(1024, help="English training rows (module task)."),
        n_dev: int = typer.Option(128, help="Dev rows per language (probe layer, CLAS alpha)."),
        n_eval: int = typer.Option(256, help="Eval rows per target."),
        probe_layers: str = typer.Option("", help="Comma-separated residual layers the probe may read (the best "
                                         "English dev accuracy wins); empty: 1/3, 1/2, 2/3, 5/6 of the depth and "
                                         "the last. An intervention after the probe's layer cannot reach it."),
        lora_steps: int = typer.Option(200, help="LoRA optimiser steps."),
        neuron_tokens: int = typer.Option(200_000, help="Monolingual tokens per language of the neuron statistics "
                                          "(the default shares `workbench neurons`' cache). Neurons are identified "
                                          "over en,es,hi,zh,ja,ru,ar,de plus the targets, one set for every target."),
        model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
) -> None:
    """Adapt on English only, evaluate in each target on the same rows, with and without each intervention;
    writes results.csv, leaderboard.md and figures."""
    from dataclasses import replace

    from workbench.inputs import integers, positive, unique
    from workbench.languages import get_language
    from workbench.neurons.cache import DEFAULT_LANGUAGES
    from workbench.neurons.data import TokenDataConfig
    from workbench.transfer.interventions import TransferInterventionConfig
    from workbench.transfer.lora import LoraTrainConfig
    from workbench.transfer.probe import ProbeConfig
    from workbench.transfer.study import TransferConfig, check_config

    codes = tuple(get_language(code).code for code in unique(_split(targets), "--targets"))
    config = TransferConfig(
        task=task, targets=codes, interventions=tuple(dict.fromkeys(("none", *unique(_split(methods), "--methods")))),
        adaptation=adapt, mask=mask, n_train=positive(n_train, "--n-train"), n_dev=positive(n_dev, "--n-dev"),
        n_eval=positive(n_eval, "--n-eval"),
        probe=ProbeConfig(layers=tuple(integers(probe_layers, "--probe-layers")) or None),
        lora=LoraTrainConfig(steps=positive(lora_steps, "--lora-steps")),
        neurons=replace(TransferInterventionConfig(), languages=tuple(dict.fromkeys((*DEFAULT_LANGUAGES, *codes))),
                        tokens=TokenDataConfig(tokens_per_language=positive(neuron_tokens, "--neuron-tokens"))))
    check_config(config)

    from workbench.models import load_model
    from workbench.transfer.report import write_transfer
    from workbench.transfer.run import run_transfer

    loaded = load_model(model, backend="hf")
    write_transfer(run_transfer(loaded, config), config, out)
    console.print((out / "leaderboard.md").read_text(encoding="utf-8"), markup=False, soft_wrap=True)
    console.print(f"results.csv, items.csv (per-item scores), leaderboard.md, config.json and figures in {out}/")


def transfer_compare_command(
        first: Path = typer.Argument(..., help="A directory written by `workbench transfer`."),
        second: Path = typer.Argument(..., help="Another one, on the same task and targets."),
        out: Path | None = typer.Option(None, help="Output directory (default: FIRST/compare-SECOND)."),
        n_bootstrap: int = typer.Option(1000, help="Bootstrap resamples of each paired interval."),
) -> None:
    """First run minus second, item by item: a paired bootstrap interval for every method, language and metric
    both runs scored (say LoRA masked to LAPE neurons against LoRA masked to random neurons)."""
    from workbench.inputs import positive
    from workbench.transfer.compare import compare_runs, comparison_table, write_comparison

    rows = compare_runs(first, second, n_bootstrap=positive(n_bootstrap, "--n-bootstrap"))
    target = write_comparison(rows, out or first / f"compare-{second.name}")
    console.print(comparison_table(rows), markup=False, soft_wrap=True)
    console.print(f"comparison.csv and comparison.md in {target}/")
