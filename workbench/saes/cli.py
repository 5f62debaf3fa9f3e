"""``workbench sae train`` / ``workbench sae eval``: a typer sub-app (mounted by ``workbench.cli``)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.saes.config import DEFAULT_LANGUAGES, SAEEvalConfig, SAETrainConfig

sae_app = typer.Typer(help="Sparse autoencoders per site, trained and evaluated with SAELens.", no_args_is_help=True)
console = Console()
_TRAIN = SAETrainConfig()
_EVAL = SAEEvalConfig()


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _number(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


@sae_app.command("train")
def train(sites: str = typer.Option(..., "--sites", help="Comma-separated sites, e.g. 6.resid_post,6.mlp_out "
                                                         "or blocks.6.hook_resid_post."),
          out: Path = typer.Option(..., "--out", help="Output directory (one SAELens directory per site)."),
          architecture: str = typer.Option(_TRAIN.architecture, help="topk, jumprelu or standard (L1)."),
          d_sae: int = typer.Option(_TRAIN.d_sae, help="Latents per SAE."),
          expansion_factor: float | None = typer.Option(None, help="Latents per SAE as a multiple of the site's "
                                                        "width (replaces --d-sae)."),
          qa_share: float = typer.Option(0.0, help="Share of each language's tokens from question/answer contexts "
                                         "(Q: <English question> A: <answer in the language>)."),
          k: int = typer.Option(_TRAIN.k, help="TopK: active latents per token."),
          tokens: int = typer.Option(_TRAIN.n_tokens, help="Distinct corpus tokens harvested (shared by all sites)."),
          samples: int = typer.Option(_TRAIN.training_samples, help="Training samples per SAE (epochs over buffer)."),
          batch_size: int = typer.Option(_TRAIN.batch_size, help="Activations per optimiser step."),
          lr: float = typer.Option(_TRAIN.lr, help="Adam learning rate."),
          l1_coefficient: float = typer.Option(_TRAIN.l1_coefficient, help="standard: L1 coefficient."),
          l0_coefficient: float = typer.Option(_TRAIN.l0_coefficient, help="jumprelu: L0 coefficient."),
          languages: str = typer.Option(",".join(DEFAULT_LANGUAGES), help="Languages of the training text."),
          model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
          force: bool = typer.Option(False, help="Retrain sites whose SAE already exists with the same config."),
          threads: int = typer.Option(0, help="Torch CPU threads while training (0: torch's default; 1 is faster "
                                              "when other jobs share the cores)."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Harvest corpus activations once and train one SAELens SAE per site."""
    from workbench.inputs import finite, positive
    from workbench.models import load_model
    from workbench.saes.training import train_saes

    for value, option in ((d_sae, "--d-sae"), (k, "--k"), (tokens, "--tokens"), (samples, "--samples"),
                          (batch_size, "--batch-size")):
        positive(value, option)
    for value, option in ((lr, "--lr"), (l1_coefficient, "--l1-coefficient"), (l0_coefficient, "--l0-coefficient")):
        finite(value, option, minimum=0)
    if expansion_factor is not None and not finite(expansion_factor, "--expansion-factor") > 0:
        raise typer.BadParameter(f"{expansion_factor:g}; give a multiple > 0", param_hint="--expansion-factor")
    if not 0 <= finite(qa_share, "--qa-share") <= 1:
        raise typer.BadParameter(f"{qa_share:g}; give a share in [0, 1]", param_hint="--qa-share")
    config = SAETrainConfig(architecture=architecture, d_sae=d_sae, k=k, n_tokens=tokens, training_samples=samples,
                            expansion_factor=expansion_factor, qa_share=qa_share,
                            batch_size=batch_size, lr=lr, l1_coefficient=l1_coefficient,
                            l0_coefficient=l0_coefficient, languages=tuple(_split_list(languages)))
    loaded = load_model(model, backend="hf")
    trained = train_saes(loaded, _split_list(sites), out, config, force=force, threads=threads or None)
    rows = {name: {"directory": str(t.directory), "reused": t.reused, "tokens": t.record.get("tokens"),
                   "train_seconds": t.record.get("train_seconds"),
                   "harvest_seconds_shared": t.record.get("harvest_seconds_shared"),
                   **t.record.get("train_fit", {})} for name, t in trained.items()}
    if as_json:
        from workbench.artifacts import json_text

        print(json_text(rows))
        return
    table = Table(title=f"SAEs trained into {out} ({architecture}, d_sae={d_sae})")
    for column in ("site", "tokens", "harvest s", "train s", "FVU (train)", "L0", "dead", "reused"):
        table.add_column(column)
    for name, row in rows.items():
        table.add_row(name, str(row["tokens"]), _number(row["harvest_seconds_shared"], 1),
                      _number(row["train_seconds"], 1), _number(row.get("fvu")), _number(row.get("l0"), 1),
                      _number(row.get("dead_share")), str(row["reused"]))
    console.print(table)
    console.print(f"held-out quality: workbench sae eval {out}")


@sae_app.command("eval")
def evaluate(sae_dir: Path = typer.Argument(..., help="Directory written by 'workbench sae train'."),
             sites: str = typer.Option("", help="Only these sites (comma-separated); default all."),
             tokens: int = typer.Option(_EVAL.n_tokens, help="Held-out tokens for FVU / L0 / dead share."),
             ce_tokens: int = typer.Option(_EVAL.ce_tokens_per_language,
                                           help="Held-out tokens per language for the CE splice test."),
             model: str = typer.Option("gemma-3-270m", help="Model alias, TransformerLens name or HF directory."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """FVU, L0, dead-latent share and CE loss recovered (error term off) per site; writes quality.json/csv/html."""
    from workbench.inputs import positive
    from workbench.models import load_model
    from workbench.saes.io import checked_sae_directories
    from workbench.saes.quality import evaluate_sae_dir

    positive(tokens, "--tokens")
    positive(ce_tokens, "--ce-tokens")
    checked_sae_directories(sae_dir, _split_list(sites) or None)
    loaded = load_model(model, backend="hf")
    reports = evaluate_sae_dir(loaded, sae_dir, SAEEvalConfig(n_tokens=tokens, ce_tokens_per_language=ce_tokens),
                               sites=_split_list(sites) or None)
    if as_json:
        from workbench.artifacts import json_text

        print(json_text({"sites": reports}))
        return
    table = Table(title=f"SAE quality on held-out text ({sae_dir})")
    for column in ("site", "FVU", "L0", "dead", "CE clean", "CE spliced", "CE zero-abl", "recovered (zero)",
                   "recovered (mean)"):
        table.add_column(column)
    for name, r in reports.items():
        table.add_row(name, _number(r["fvu"]), _number(r["l0"], 1), _number(r["dead_share"]), _number(r["ce_clean"]),
                      _number(r["ce_spliced"]), _number(r.get("ce_zero_ablated")),
                      _number(r.get("ce_recovered_zero")), _number(r.get("ce_recovered_mean")))
    console.print(table)
    console.print(f"written: {sae_dir}/quality.json, quality.csv, quality.html")
