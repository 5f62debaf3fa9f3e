"""Quality of SAEs on held-out text: FVU, L0, dead latents, and CE loss recovered when spliced into the model.

Splicing replaces the site's activation by the SAE reconstruction (the error term is *off*) at every usable
position; the BOS position is left untouched when ``exclude_bos`` (its residual is an outlier no SAE is trained
on). The same positions are zeroed (``zero`` baseline) or set to the held-out mean activation of the site
(``mean`` baseline) for the ablation references:
``CE recovered = (CE_ablated - CE_spliced) / (CE_ablated - CE_clean)``. CE is the token-weighted mean next-token
cross-entropy (nats) over every predicted token of the held-out texts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor
from tqdm.auto import tqdm

from workbench.activations import TokenBatch
from workbench.artifacts import atomic_write_json, atomic_write_text
from workbench.backends import Model, device_of, position_logits
from workbench.models import model_metadata
from workbench.saes.config import SAEError, SAEEvalConfig
from workbench.saes.data import ActivationBuffer, corpus_batches, harvest_buffer
from workbench.saes.io import QUALITY_FILE, check_sae_fits, load_sae_dir, site_directories
from workbench.saes.metrics import ce_recovered, grouped_fvu, json_safe, reconstruction_metrics
from workbench.sites import Site

Replacement = Callable[[Tensor], Tensor]


def _replace_from(start: int, replacement: Replacement):
    def hook(activation: Tensor, hook: Any) -> Tensor:
        edited = activation.clone()
        edited[:, start:] = replacement(activation[:, start:])
        return edited

    return hook


def splice_fn(sae: Any) -> Replacement:
    """The SAE reconstruction (no error term)."""

    def replace(activation: Tensor) -> Tensor:
        return sae.decode(sae.encode(activation.to(sae.dtype))).to(activation.dtype)

    return replace


def constant_fn(value: Float[Tensor, " d"] | None) -> Replacement:
    """Every position set to ``value`` (zeros when None)."""

    def replace(activation: Tensor) -> Tensor:
        if value is None:
            return torch.zeros_like(activation)
        return value.to(activation).expand_as(activation).clone()

    return replace


def _summed_cross_entropy(targets: Tensor) -> Callable[[Tensor, slice], Tensor]:
    return lambda logits, rows: F.cross_entropy(logits.float(), targets[rows], reduction="sum")[None]


def token_cross_entropy(model: Model, batches: Sequence[TokenBatch], hook_name: str | None = None,
                        replacement: Replacement | None = None, *, exclude_bos: bool = True,
                        bos_token_id: int | None = None, extra_hooks: Sequence[tuple[str, Any]] = ()) -> float:
    """Token-weighted mean next-token CE (nats) over ``batches``; with ``replacement``, the activation at
    ``hook_name`` is replaced at every position (from column 1 on when the rows start with BOS and
    ``exclude_bos``). ``extra_hooks`` (e.g. a feature ablation) are active throughout. Logits are computed in
    chunks of predicted positions only."""
    if bos_token_id is None and getattr(model, "tokenizer", None) is not None:
        bos_token_id = model.tokenizer.bos_token_id
    device = device_of(model)
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            tokens, mask = batch.tokens.to(device), batch.attention_mask.to(device)
            starts_with_bos = bos_token_id is not None and bool((batch.tokens[:, 0] == bos_token_id).all())
            start = 1 if exclude_bos and starts_with_bos else 0
            hooks = list(extra_hooks)
            if replacement is not None:
                hooks.append((hook_name, _replace_from(start, replacement)))
            predicted = mask[:, 1:].bool()
            targets = tokens[:, 1:][predicted]
            with model.hooks(fwd_hooks=hooks):
                total += float(position_logits(
                    model, tokens, mask, F.pad(predicted, (0, 1)),
                    _summed_cross_entropy(targets)).sum())
            count += int(predicted.sum())
    if count == 0:
        raise SAEError("no predicted tokens in the CE batches")
    return total / count


def evaluate_saes(model: Model, saes: dict[str, Any], config: SAEEvalConfig | None = None, *,
                  held_out: ActivationBuffer | None = None, ce_batches: Sequence[TokenBatch] | None = None,
                  progress: bool = True) -> dict[str, dict[str, Any]]:
    """Quality of each SAE (hook name -> SAE) on held-out tokens; one harvest serves every site.

    ``held_out`` / ``ce_batches`` replace the corpus data (both built from ``config`` when None).
    """
    config = config or SAEEvalConfig()
    if not saes:
        raise SAEError("no SAEs to evaluate")
    sites = {name: check_sae_fits(sae, model) for name, sae in saes.items()}
    started = time.perf_counter()
    if held_out is None:
        batches, _ = corpus_batches(model.tokenizer, config.languages, config.split, config.n_tokens,
                                    max_length=config.max_length, batch_size=config.text_batch_size,
                                    exclude_bos=config.exclude_bos)
        held_out = harvest_buffer(model, batches, list(sites.values()), exclude_bos=config.exclude_bos,
                                  progress=progress, description="held-out harvest")
    if ce_batches is None:
        ce_batches, _ = corpus_batches(model.tokenizer, config.languages, config.split,
                                       config.ce_tokens_per_language * len(config.languages),
                                       max_length=config.ce_max_length, batch_size=config.text_batch_size,
                                       exclude_bos=config.exclude_bos)
    harvest_seconds = time.perf_counter() - started
    ce_clean = token_cross_entropy(model, ce_batches, exclude_bos=config.exclude_bos)
    reports: dict[str, dict[str, Any]] = {}
    for name in tqdm(list(saes), desc="evaluate SAEs", disable=not progress):
        sae, site = saes[name], sites[name]
        started = time.perf_counter()
        x = held_out.activations[name]
        with torch.inference_mode():
            latents = sae.encode(x)
            x_hat = sae.decode(latents)
        report = reconstruction_metrics(x, x_hat, latents)
        report["fvu_by_language"] = grouped_fvu(x, x_hat, held_out.labels, held_out.groups)
        report["ce_clean"] = ce_clean
        report["ce_spliced"] = token_cross_entropy(model, ce_batches, name, splice_fn(sae),
                                                   exclude_bos=config.exclude_bos)
        for baseline in config.baselines:
            value = None if baseline == "zero" else x.mean(0)
            ablated = token_cross_entropy(model, ce_batches, name, constant_fn(value), exclude_bos=config.exclude_bos)
            report[f"ce_{baseline}_ablated"] = ablated
            report[f"ce_recovered_{baseline}"] = ce_recovered(ce_clean, report["ce_spliced"], ablated)
        report.update({
            "site": name, "layer": site.layer, "kind": site.kind, "d_in": int(sae.cfg.d_in),
            "d_sae": int(sae.cfg.d_sae), "architecture": sae.cfg.architecture(),
            "ce_tokens": int(sum(int(b.attention_mask[:, 1:].sum()) for b in ce_batches)),
            "seconds": round(time.perf_counter() - started, 2),
            "harvest_seconds_shared": round(harvest_seconds, 2),
            "ablation_positions": "every non-padding position except BOS" if config.exclude_bos else "every position",
            "eval_config": config.to_dict(), "model": model_metadata(model),
        })
        reports[name] = report
    return reports


def quality_frame(reports: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per site with the headline numbers."""
    columns = ["site", "layer", "kind", "architecture", "d_sae", "fvu", "l0", "dead_share", "ce_clean", "ce_spliced",
               "ce_zero_ablated", "ce_recovered_zero", "ce_mean_ablated", "ce_recovered_mean"]
    rows = [{column: report.get(column) for column in columns} for report in reports.values()]
    return pd.DataFrame(rows, columns=columns)


def quality_figure(reports: dict[str, dict[str, Any]]) -> go.Figure:
    """Bars per site: FVU, L0, dead-latent share and CE recovered (zero and mean ablation baselines)."""
    frame = quality_frame(reports)
    figure = make_subplots(rows=1, cols=4, subplot_titles=("FVU (lower is better)", "L0 (active latents/token)",
                                                           "dead-latent share", "CE loss recovered"))
    labels = [f"{Site.parse(site).layer}.{Site.parse(site).kind}" for site in frame["site"]]
    for column, (field, colour) in enumerate([("fvu", "#0072B2"), ("l0", "#009E73"), ("dead_share", "#D55E00")], 1):
        figure.add_trace(go.Bar(x=labels, y=frame[field], name=field, marker_color=colour, showlegend=False),
                         row=1, col=column)
    for field, colour in (("ce_recovered_zero", "#E69F00"), ("ce_recovered_mean", "#56B4E9")):
        if frame[field].notna().any():
            figure.add_trace(go.Bar(x=labels, y=frame[field], name=field.replace("ce_recovered_", "vs ") + " ablation",
                                    marker_color=colour), row=1, col=4)
    for column, title in enumerate(("FVU (share of variance)", "active latents per token", "share of latents",
                                    "share of CE loss recovered"), 1):
        figure.update_yaxes(title_text=title, row=1, col=column)
        figure.update_xaxes(title_text="site (layer.kind)", row=1, col=column)
    figure.update_layout(template="plotly_white", title="SAE quality on held-out text", barmode="group",
                         height=400, width=1300)
    return figure


def evaluate_sae_dir(model: Model, root: str | Path, config: SAEEvalConfig | None = None, *,
                     sites: list[str] | None = None, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Evaluate every SAE under ``root``; writes ``<site>/quality.json``, ``quality.json`` (all sites),
    ``quality.csv`` and ``quality.html`` at ``root``."""
    root = Path(root)
    saes = load_sae_dir(root, model, sites=sites)
    reports = evaluate_saes(model, saes, config, progress=progress)
    directories = site_directories(root)
    for name, report in reports.items():
        atomic_write_json(directories[name] / QUALITY_FILE, json_safe(report))
    atomic_write_json(root / QUALITY_FILE, json_safe({"sites": reports}))
    atomic_write_text(root / "quality.csv", quality_frame(reports).to_csv(index=False))
    atomic_write_text(root / "quality.html", quality_figure(reports).to_html(include_plotlyjs="cdn"))
    return reports
