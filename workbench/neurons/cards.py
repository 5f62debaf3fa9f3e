"""A neuron card: everything about one MLP neuron on one page.

    card = neuron_card(model, 17, 1234)                    # layer 17, neuron 1234 (gate pre-activation units)
    Path("neuron-17-1234.html").write_text(neuron_card_html(card))

Per language: the activation probability ``P(gate pre-activation > 0)`` (what LAPE and 90p read; from the cached
neuron harvest when one is given, else from the cached pass over the held-out text that every neuron of the
layer shares, :mod:`workbench.views.statistics`), its distribution and top contexts with the
firing tokens highlighted, and the change of held-out NLL when the neuron is zeroed (its ``mlp.hook_post`` unit set
to 0 after the BOS position, as the feature ablations do); the tokens its output direction promotes and suppresses
(its down-projection row, scaled by the post-MLP norm's gain where the model has one, through the unembedding);
and its membership in any neuron masks given (LAPE, 90p, CLAS, AP expertise).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch

from workbench.activations import ActivationStats
from workbench.backends import Model, mlp_write_weights
from workbench.features.ablation import language_batches
from workbench.neurons.masks import NeuronError, NeuronMask
from workbench.saes.quality import token_cross_entropy
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
class NeuronCard:
    """One neuron's card (JSON-ready via :meth:`to_dict`)."""

    layer: int
    neuron: int
    languages: list[str]
    activation_probability: dict[str, float]
    """``P(gate pre-activation > 0)`` per language."""
    probability_source: str
    """``harvest`` (the cached neuron statistics) or ``card pass`` (the cached pass over the card's held-out text)."""
    activations: dict[str, list[float]]
    """A uniform sample (the cached reservoir) of the positive gate pre-activations per language (the distribution
    shown)."""
    contexts: dict[str, list[Context]]
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    nll_delta: dict[str, float] | None
    """Change of held-out NLL per language when the neuron is zeroed (None: not run)."""
    membership: dict[str, list[str]] = field(default_factory=dict)
    """Mask name -> the languages whose units include this neuron."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def neuron_card(model: Model, layer: int, neuron: int, config: CardConfig = CardConfig(), *,
                stats: Mapping[str, ActivationStats] | None = None, masks: Mapping[str, NeuronMask] | None = None,
                progress: bool = False) -> NeuronCard:
    """The card of ``neuron`` at ``layer`` (``stats``: a cached per-language ``mlp_pre`` harvest; ``masks``: neuron
    masks whose membership is shown, e.g. ``{"lape": cached_mask("lape", model)}``)."""
    if not 0 <= layer < model.cfg.n_layers:
        raise NeuronError(f"layer {layer} is out of range: the model has layers 0..{model.cfg.n_layers - 1}")
    if not 0 <= neuron < model.cfg.d_mlp:
        raise NeuronError(f"neuron {neuron} is out of range: layer {layer} has {model.cfg.d_mlp} neurons "
                          f"(0..{model.cfg.d_mlp - 1})")
    held_out = config.held_out(config.tokens_per_language)
    hook = f"blocks.{layer}.mlp.hook_pre"
    readings = unit_statistics(model, hook, lambda activation: activation, {"units": "mlp_pre"}, held_out,
                               config.statistics(), progress=progress)
    batches = language_batches(model.tokenizer, held_out)
    contexts = {lang: unit_contexts(model, batches[lang], hook, lambda activation: activation[..., neuron],
                                    readings[lang].rows(neuron)) for lang in config.languages}
    probability = {lang: readings[lang].firing_rate(neuron) for lang in config.languages}
    source = "card pass"
    if stats is not None and all(lang in stats for lang in config.languages):
        probability = {lang: float(stats[lang].frac_positive(hook, lang)[neuron]) for lang in config.languages}
        source = "harvest"
    promoted, suppressed = _logit_effects(model, layer, neuron, config.n_tokens)
    return NeuronCard(layer, neuron, list(config.languages), probability, source,
                      {lang: readings[lang].values(neuron) for lang in config.languages}, contexts, promoted,
                      suppressed,
                      _zeroing_nll(model, layer, neuron, config) if config.ablation_tokens else None,
                      {name: [lang for lang in mask.languages if bool(mask.of(lang)[layer, neuron])]
                       for name, mask in (masks or {}).items()})


card = neuron_card
"""Short name: ``wb.neurons.card(model, layer, neuron)``."""


def _logit_effects(model: Model, layer: int, neuron: int, n: int
                   ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Top and bottom tokens of the neuron's output direction (times the post-MLP norm's gain) through the
    unembedding."""
    writer = mlp_write_weights(model, layer)
    return token_effects(model, writer.w_out[neuron] * (writer.gain if writer.gain is not None else 1.0), n)


def _zeroing_nll(model: Model, layer: int, neuron: int, config: CardConfig) -> dict[str, float]:
    held_out = config.held_out(config.ablation_tokens)
    batches = language_batches(model.tokenizer, held_out)
    clean = clean_cross_entropy(model, held_out)

    def zero(activation: torch.Tensor) -> torch.Tensor:
        edited = activation.clone()
        edited[..., neuron] = 0
        return edited

    hook = f"blocks.{layer}.mlp.hook_post"
    return {lang: token_cross_entropy(model, lang_batches, hook, zero) - clean[lang]
            for lang, lang_batches in batches.items()}


def activation_figure(card: NeuronCard) -> go.Figure:
    """Positive gate pre-activations per language, overlaid (fixed language colours)."""
    return activations_figure(card.activations, {lang: f"{lang} (P>0 {card.activation_probability[lang]:.1%})"
                                                 for lang in card.languages},
                              x_title="gate pre-activation (where > 0)",
                              title=f"neuron {card.layer}.{card.neuron}: activations by language")


def neuron_card_html(card: NeuronCard) -> str:
    """The card as a self-contained HTML page (plotly from its CDN)."""
    rows = "".join(f"<tr><td>{lang}</td><td>{card.activation_probability[lang]:.2%}</td><td>"
                   f"{'' if card.nll_delta is None else f'{card.nll_delta[lang]:+.4f}'}</td></tr>"
                   for lang in card.languages)
    listing = lambda pairs: ", ".join(f"{html.escape(repr(t))} {v:+.2f}" for t, v in pairs)  # noqa: E731
    member = "".join(f"<tr><td>{html.escape(name)}</td><td>{', '.join(langs) or '-'}</td></tr>"
                     for name, langs in card.membership.items())
    return (f"<html><head><meta charset='utf-8'><title>neuron {card.layer}.{card.neuron}</title></head><body>"
            f"<h1>MLP neuron {card.neuron} of layer {card.layer}</h1><table><tr><th>language</th>"
            f"<th>P(active) ({card.probability_source})</th><th>NLL change when zeroed (nats/token)</th></tr>"
            f"{rows}</table>{'<h2>Masks</h2><table>' + member + '</table>' if member else ''}"
            f"<h2>Logit effects (output direction through the unembedding)</h2><p>promotes: "
            f"{listing(card.promoted)}</p><p>suppresses: {listing(card.suppressed)}</p>"
            f"{activation_figure(card).to_html(include_plotlyjs='cdn', full_html=False)}"
            f"<h2>Top contexts</h2>{contexts_html(card.contexts)}</body></html>")
