"""``workbench harvest``: activation statistics over the shipped corpus, as one process or data-parallel under
``torchrun`` (each rank harvests its shard; the statistics are all-reduced exactly and rank 0 saves them).

    workbench harvest --model gemma-3-270m --langs en,hi --sites mlp_pre --kinds mlp_pre --out harvests/g270m
    torchrun --nproc_per_node 4 -m workbench.cli harvest --model gemma-3-270m --langs en,hi --sites mlp_pre \\
        --kinds mlp_pre --out harvests/g270m

Mounted by the main CLI as ``app.command("harvest")(harvest_command)``. Heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from workbench import model_options


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def harvest_command(
        langs: str = typer.Option(..., "--langs", help="Comma-separated language codes (the groups)."),
        sites: str = typer.Option(..., "--sites", help="Comma-separated sites: a kind at every layer (mlp_pre, "
                                  "resid_post ...) or one site (6.resid_post, blocks.6.mlp.hook_pre)."),
        out: Path = typer.Option(..., "--out", help="Directory the statistics are saved to (new, empty, or a "
                                 "previous harvest, which is replaced)."),
        kinds: str = typer.Option("", "--kinds", help="Comma-separated site kinds that also keep per-unit histograms "
                                  "(quantiles, CDFs; what LAPE and 90p read: --kinds mlp_pre)."),
        n_tokens: int = typer.Option(100_000, "--n-tokens", help="Tokens per language (BOS excluded); a language with "
                                     "less text in the split uses all of it."),
        split: str = typer.Option("discovery", "--split", help="Corpus split: discovery, dev or eval."),
        max_length: int = typer.Option(256, "--max-length", help="Longest tokenised text; longer ones are truncated."),
        batch_size: int = typer.Option(16, "--batch-size", help="Texts per forward pass."),
        histogram_bins: int = typer.Option(512, "--histogram-bins", help="Histogram bins (asinh-spaced)."),
        histogram_max_abs: float = typer.Option(1e4, "--histogram-max-abs", help="Largest |x| inside the bins."),
        sample_tokens: int = typer.Option(0, "--sample-tokens", help="Also keep a uniform sample of this many token "
                                          "activations per site and language (PCA, LDA and probe directions)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the token sample (rank r samples with seed + r)."),
        model: str = typer.Option("gemma-3-270m", "--model", help="Model alias, TransformerLens name or HF "
                                  "directory."),
        backend: str = typer.Option("hf", "--backend", help="hooked, bridge or hf (fastest)."),
        dtype: str = model_options.DTYPE,
) -> None:
    """Per-language activation statistics (count, mean, variance, P(x>0), min, max, optional histograms and token
    samples) saved as an ActivationStats directory; under torchrun each process harvests its shard."""
    from rich.console import Console

    from workbench.activations import HarvestConfig
    from workbench.distributed import harvest_corpus, torchrun_launch

    weights = model_options.placement(dtype, None)["dtype"]
    config = HarvestConfig(histogram_kinds=tuple(_split(kinds)), histogram_bins=histogram_bins,
                           histogram_max_abs=histogram_max_abs, sample_tokens=sample_tokens, sample_seed=seed)
    stats = harvest_corpus(model, _split(langs), _split(sites), out=out, config=config, n_tokens=n_tokens,
                           split=split, max_length=max_length, batch_size=batch_size, backend=backend,
                           dtype=weights)
    if torchrun_launch().rank == 0:
        site = stats.sites[0]
        tokens = ", ".join(f"{group} {stats.count(site, group):,}" for group in stats.groups)
        Console(soft_wrap=True).print(
            f"wrote {out}: {len(stats.sites)} sites x {len(stats.groups)} languages ({tokens} tokens) from "
            f"{stats.metadata['world_size']} process(es) in {stats.metadata['harvest_seconds']} s; read it with "
            "ActivationStats.load")
