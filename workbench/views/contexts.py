"""What a card shows of one unit (an SAE latent, an MLP neuron): its top contexts with the firing tokens highlighted
(HTML), its distribution per language, and the tokens a direction promotes and suppresses."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from torch import Tensor

from workbench.activations import TokenBatch
from workbench.backends import Model, unembed
from workbench.features.ablation import AblationConfig
from workbench.plots import TEMPLATE, language_colour, style
from workbench.saes.data import capture
from workbench.views.statistics import StatisticsConfig, rows_of


@dataclass(frozen=True)
class CardConfig:
    """What a feature or neuron card reads."""

    languages: tuple[str, ...] = ("en", "hi", "es", "zh", "ru", "ar")
    """Languages of the held-out text."""
    split: str = "eval"
    """Corpus split of the held-out text."""
    tokens_per_language: int = 1500
    """Usable held-out tokens per language for the distribution and the contexts."""
    ablation_tokens: int = 400
    """Held-out tokens per language for the CE change when the unit is zeroed (0: skip)."""
    n_contexts: int = 3
    """Top contexts kept per language."""
    reservoir_size: int = 256
    """Values per language kept for the distribution shown (a uniform sample of where the unit fires)."""
    n_tokens: int = 10
    """Promoted and suppressed tokens listed."""

    def held_out(self, tokens_per_language: int) -> AblationConfig:
        """The held-out text of these languages and split, ``tokens_per_language`` each (languages checked)."""
        return AblationConfig(languages=self.languages, split=self.split, tokens_per_language=tokens_per_language)

    def statistics(self) -> StatisticsConfig:
        """What the cached pass over the held-out text keeps per unit."""
        return StatisticsConfig(reservoir_size=self.reservoir_size, n_contexts=self.n_contexts)


@dataclass(frozen=True)
class Context:
    """One text's tokens and the unit's value on each (0 where it does not fire)."""

    tokens: list[str]
    values: list[float]

    @property
    def peak(self) -> float:
        return max(self.values, default=0.0)


def unit_contexts(model: Model, batches: Sequence[TokenBatch], hook: str, unit_value: Callable[[Tensor], Tensor],
                  rows: Sequence[int]) -> list[Context]:
    """The texts at ``rows`` of ``batches`` (a unit's top texts, from :mod:`workbench.views.statistics`) with the
    unit's value at each token, read in one short forward pass (``unit_value``: activation -> the unit's value)."""
    if not rows:
        return []
    batch = rows_of(batches, rows)
    captured = next(capture(model, [batch], [hook], progress=False))
    with torch.no_grad():
        unit = unit_value(captured.activations[hook]).float() * captured.mask
    decode = model.tokenizer.decode
    contexts = []
    for row in range(len(rows)):
        length = int(batch.attention_mask[row].sum())
        contexts.append(Context([decode([token]) for token in batch.tokens[row, :length].tolist()],
                                unit[row, :length].clamp_min(0).tolist()))
    return contexts


def token_effects(model: Model, direction: Tensor, n: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The ``n`` tokens a residual-stream ``direction`` promotes most and suppresses most through the unembedding
    (bias removed), with their logit changes."""
    with torch.inference_mode():
        zero = torch.zeros(1, model.cfg.d_model, device=direction.device)
        effect = (unembed(model, direction[None]) - unembed(model, zero))[0].cpu()
    top, bottom = effect.topk(n), (-effect).topk(n)
    decode = model.tokenizer.decode
    return ([(decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices, strict=True)],
            [(decode([int(i)]), float(-v)) for v, i in zip(bottom.values, bottom.indices, strict=True)])


def activations_figure(values: dict[str, list[float]], names: dict[str, str], *, x_title: str, title: str
                       ) -> go.Figure:
    """A unit's positive values per language as overlaid histograms, each normalised to its language's sample (the
    values are a bounded uniform sample of where the unit fires, so counts would not compare across languages; the
    firing rate belongs in ``names``, the legend entry per language). One set of 30 bins; fixed language colours."""
    figure = go.Figure()
    pooled = [value for lang_values in values.values() for value in lang_values]
    bins = dict(start=min(pooled), end=max(pooled), size=(max(pooled) - min(pooled)) / 30 or 1.0) if pooled else None
    for lang, lang_values in values.items():
        figure.add_trace(go.Histogram(x=lang_values, name=names[lang], marker_color=language_colour(lang),
                                      opacity=0.6, xbins=bins, histnorm="probability"))
    figure.update_layout(template=TEMPLATE, barmode="overlay", xaxis_title=x_title,
                         yaxis_title="share of the language's firing tokens", title=title)
    return style(figure)


def highlighted_html(context: Context) -> str:
    """The context as HTML, each firing token's background as strong as its value relative to the peak."""
    peak = context.peak or 1.0
    spans = []
    for token, value in zip(context.tokens, context.values, strict=True):
        text = html.escape(token)
        if value > 0:
            spans.append(f'<span class="fires" title="{value:.3f}" style="background: rgba(230, 159, 0, '
                         f'{0.15 + 0.85 * value / peak:.2f})">{text}</span>')
        else:
            spans.append(text)
    return "".join(spans)


def contexts_html(contexts: dict[str, list[Context]]) -> str:
    """Per language, its top contexts highlighted (or a note that the unit never fires there)."""
    return "".join(f"<h3>{html.escape(lang)}</h3>" + ("".join(
        f'<p class="context">{highlighted_html(c)} <small>(peak {c.peak:.2f})</small></p>' for c in found)
        or "<p>(never fires)</p>") for lang, found in contexts.items())
