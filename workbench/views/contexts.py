"""One unit (an SAE latent, an MLP neuron) read over held-out text: where it fires, how strongly, and its top
contexts, in one bounded pass (a heap of the best texts), plus the HTML that highlights the firing tokens."""

from __future__ import annotations

import heapq
import html
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import torch
from torch import Tensor

from workbench.backends import Model, unembed
from workbench.features.ablation import AblationConfig
from workbench.plots import TEMPLATE, language_colour, style
from workbench.saes.data import capture


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
    n_tokens: int = 10
    """Promoted and suppressed tokens listed."""

    def held_out(self, tokens_per_language: int) -> AblationConfig:
        """The held-out text of these languages and split, ``tokens_per_language`` each (languages checked)."""
        return AblationConfig(languages=self.languages, split=self.split, tokens_per_language=tokens_per_language)


@dataclass(frozen=True)
class Context:
    """One text's tokens and the unit's value on each (0 where it does not fire)."""

    tokens: list[str]
    values: list[float]

    @property
    def peak(self) -> float:
        return max(self.values, default=0.0)


@dataclass(frozen=True)
class UnitReading:
    """What one pass over a language's text shows of a unit."""

    firing_rate: float
    """Share of usable tokens where the unit's value is > 0."""
    values: list[float]
    """The unit's values where it fires."""
    contexts: list[Context]
    """The texts where it peaks highest, best first."""


def read_unit(model: Model, batches: Sequence[Any], hook: str, unit_values: Callable[[Tensor], Tensor], *,
              n_contexts: int = 3, progress: bool = False, description: str = "unit") -> UnitReading:
    """``unit_values`` maps the activation at ``hook`` (batch, pos, d) to the unit's value per position."""
    fired, usable, values = 0, 0, []
    heap: list[tuple[float, int, Context]] = []
    order = itertools.count()  # a unique second key, so equal peaks never compare contexts
    for captured in capture(model, batches, [hook], progress=progress, description=description):
        with torch.no_grad():
            unit = unit_values(captured.activations[hook]).float() * captured.mask
        usable += int(captured.mask.sum())
        active = unit[captured.mask & (unit > 0)]
        fired += len(active)
        values += active.tolist()
        for row in range(unit.shape[0]):
            length = int(captured.batch.attention_mask[row].sum())
            peak = float(unit[row, :length].max()) if length else 0.0
            if peak <= 0:
                continue
            ids = captured.batch.tokens[row, :length].tolist()
            context = Context([model.tokenizer.decode([token]) for token in ids],
                              unit[row, :length].clamp_min(0).tolist())
            entry = (peak, -next(order), context)
            heapq.heappush(heap, entry) if len(heap) < n_contexts else heapq.heappushpop(heap, entry)
    return UnitReading(fired / max(usable, 1), values, [context for _, _, context in sorted(heap, reverse=True)])


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
    """A unit's positive values per language as overlaid histograms (fixed language colours; ``names``: the legend
    entry per language)."""
    figure = go.Figure()
    for lang, lang_values in values.items():
        figure.add_trace(go.Histogram(x=lang_values, name=names[lang], marker_color=language_colour(lang),
                                      opacity=0.6, nbinsx=30))
    figure.update_layout(template=TEMPLATE, barmode="overlay", xaxis_title=x_title, yaxis_title="tokens",
                         title=title)
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
