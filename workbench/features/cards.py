"""A feature card: everything about one SAE latent on one page.

    card = feature_card(model, sae, 1234)                         # any SAELens SAE fitted to the model
    Path("latent-1234.html").write_text(feature_card_html(card))

Per language: the latent's firing rate and activation distribution, its top-activating contexts with the firing
tokens highlighted, and the change of held-out cross-entropy when it is ablated (the ablation study, error term
kept); the tokens its decoder direction promotes and suppresses (``W_dec[j] @ W_U``, residual-width SAEs); and,
when a :class:`workbench.features.analysis.FeatureReport` is given, its selectivity, causal lift, score, LangFIR
survival and traced neurons. The distribution and top contexts come from one cached pass over the held-out text for
every latent of the SAE (:mod:`workbench.views.statistics`), so only a site's first card reads the corpus.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch

from workbench.backends import Model
from workbench.features.ablation import ablation_study, language_batches
from workbench.features.scores import FeatureError
from workbench.saes.io import check_sae_fits, sae_parameters_digest
from workbench.views.contexts import (
    CardConfig,
    Context,
    activations_figure,
    contexts_html,
    token_effects,
    unit_contexts,
)
from workbench.views.statistics import clean_cross_entropy, unit_statistics


@dataclass
class FeatureCard:
    """One latent's card (JSON-ready via :meth:`to_dict`)."""

    site: str
    latent: int
    languages: list[str]
    firing_rate: dict[str, float]
    """Share of usable tokens on which the latent fires, per language."""
    activations: dict[str, list[float]]
    """A uniform sample (the cached reservoir) of the latent's non-zero activations per language (the distribution
    shown)."""
    contexts: dict[str, list[Context]]
    promoted: list[tuple[str, float]] | None
    suppressed: list[tuple[str, float]] | None
    ablation_delta_ce: dict[str, float] | None
    """Change of held-out CE per language when the latent is zeroed (None: not run)."""
    analysis: dict[str, Any] = field(default_factory=dict)
    """From a feature report: selectivity, lift, score, side, LangFIR survival, and the (layer, neuron) pairs its
    tracing check zeroed (for the features the report verified)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_card(model: Model, sae: Any, latent: int, config: CardConfig = CardConfig(), *,
                 report: Any | None = None, progress: bool = False) -> FeatureCard:
    """The card of ``latent`` of ``sae`` (checked against ``model``: hook present, widths equal)."""
    site = check_sae_fits(sae, model)
    width = int(sae.cfg.d_sae)
    if not 0 <= latent < width:
        raise FeatureError(f"latent {latent} is out of range: the SAE at {site.hook_name} has {width} latents "
                           f"(0..{width - 1})")
    held_out = config.held_out(config.tokens_per_language)
    encode = lambda activation: sae.encode(activation.to(sae.dtype))  # noqa: E731
    stats = unit_statistics(model, site.hook_name, encode, {"sae": sae_parameters_digest(sae)}, held_out,
                            config.statistics(), progress=progress)
    batches = language_batches(model.tokenizer, held_out)
    contexts = {lang: unit_contexts(model, batches[lang], site.hook_name, lambda a: encode(a)[..., latent],
                                    stats[lang].rows(latent)) for lang in config.languages}
    promoted, suppressed = _logit_effects(model, sae, latent, config.n_tokens)
    ablation = None
    if config.ablation_tokens:
        ablation_text = config.held_out(config.ablation_tokens)
        clean = clean_cross_entropy(model, ablation_text)
        result = ablation_study(model, sae, [latent], ablation_text, progress=progress,
                                ce_clean=torch.tensor([clean[lang] for lang in ablation_text.languages]))
        ablation = dict(zip(result.languages, result.delta_ce[0].tolist(), strict=True))
    return FeatureCard(site.hook_name, latent, list(config.languages),
                       {lang: stats[lang].firing_rate(latent) for lang in config.languages},
                       {lang: stats[lang].values(latent) for lang in config.languages}, contexts, promoted,
                       suppressed, ablation, _from_report(report, site.hook_name, latent))


card = feature_card
"""Short name: ``wb.features.card(model, sae, latent)``."""


def _logit_effects(model: Model, sae: Any, latent: int, n: int
                   ) -> tuple[list[tuple[str, float]] | None, list[tuple[str, float]] | None]:
    """Top and bottom tokens of ``W_dec[latent] @ W_U`` (None for SAEs outside the residual width)."""
    direction = sae.W_dec[latent].detach().float()
    if direction.shape[-1] != model.cfg.d_model:
        return None, None
    return token_effects(model, direction, n)


def _from_report(report: Any | None, site: str, latent: int) -> dict[str, Any]:
    if report is None:
        return {}
    payload = report if isinstance(report, dict) else report.to_dict()
    found = next((row for row in payload["candidates"] + payload["features"]
                  if row["site"] == site and row["index"] == latent), None)
    survivors = {(row["site"], row["index"]) for row in payload["langfir"]}
    traced = [neuron for check in payload["tracing_checks"] if (check["site"], check["feature"]) == (site, latent)
              for neuron in check["neurons"]]
    keys = ("side", "selectivity", "lift", "score", "firing_rate_target", "firing_rate_en")
    return {**({key: found[key] for key in keys if key in found} if found else {"measured": False}),
            "langfir_survivor": (site, latent) in survivors, "traced_neurons": traced}


def activation_figure(card: FeatureCard) -> go.Figure:
    """The latent's non-zero activations per language, overlaid (fixed language colours)."""
    return activations_figure(card.activations, {lang: f"{lang} ({card.firing_rate[lang]:.1%} fire)"
                                                 for lang in card.languages}, x_title="activation (where it fires)",
                              title=f"{card.site} latent {card.latent}: activations by language")


def feature_card_html(card: FeatureCard) -> str:
    """The card as a self-contained HTML page (plotly from its CDN)."""
    rows = "".join(f"<tr><td>{lang}</td><td>{card.firing_rate[lang]:.2%}</td><td>"
                   f"{'' if card.ablation_delta_ce is None else f'{card.ablation_delta_ce[lang]:+.4f}'}</td></tr>"
                   for lang in card.languages)
    tokens = ""
    if card.promoted is not None:
        listing = lambda pairs: ", ".join(f"{html.escape(repr(t))} {v:+.2f}" for t, v in pairs)  # noqa: E731
        tokens = (f"<h2>Logit effects (W_dec @ W_U)</h2><p>promotes: {listing(card.promoted)}</p>"
                  f"<p>suppresses: {listing(card.suppressed or [])}</p>")
    analysis = "".join(f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(value))}</td></tr>"
                       for key, value in card.analysis.items())
    return (f"<html><head><meta charset='utf-8'><title>{card.site} latent {card.latent}</title></head><body>"
            f"<h1>{card.site} latent {card.latent}</h1><table><tr><th>language</th><th>fires on</th>"
            f"<th>CE change when zeroed (nats/token)</th></tr>{rows}</table>"
            f"{'<h2>Analysis</h2><table>' + analysis + '</table>' if analysis else ''}{tokens}"
            f"{activation_figure(card).to_html(include_plotlyjs='cdn', full_html=False)}"
            f"<h2>Top contexts</h2>{contexts_html(card.contexts)}</body></html>")

