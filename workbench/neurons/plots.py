"""Figures of the neuron methods: plotly builders returning ``go.Figure`` (never shown)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch
from torch import Tensor

from workbench.neurons.clas import CATEGORIES
from workbench.neurons.masks import NeuronMask
from workbench.plots import TEMPLATE, language_colour

_CATEGORY_COLOURS = {"dead": "#BBBBBB", "language-specific": "#D55E00", "partial-shared": "#0072B2",
                     "all-shared": "#009E73"}


def neurons_per_layer(mask: NeuronMask, title: str | None = None) -> go.Figure:
    """Stacked bars: neurons per layer, one colour per language."""
    figure = go.Figure()
    for code, counts in mask.per_layer_language().items():
        figure.add_trace(go.Bar(x=list(range(mask.n_layers)), y=counts, name=code,
                                marker_color=language_colour(code)))
    figure.update_layout(barmode="stack", template=TEMPLATE, xaxis_title="layer (block index)",
                         yaxis_title="neurons", legend_title="language",
                         title=title or f"{mask.method}: neurons per layer per language ({mask.n_selected} distinct)")
    return figure


def heatmap(matrix: Tensor, rows: Sequence[str], columns: Sequence[str], *, title: str, x_title: str, y_title: str,
            colour_title: str = "", diverging: bool = False, decimals: int = 2) -> go.Figure:
    """A labelled heatmap with the values written in the cells."""
    values = matrix.detach().float().tolist()
    limit = float(matrix.abs().max()) if diverging and matrix.numel() else None
    figure = go.Figure(go.Heatmap(
        z=values, x=list(columns), y=list(rows), text=[[f"{v:.{decimals}f}" for v in row] for row in values],
        texttemplate="%{text}", colorscale="RdBu_r" if diverging else "Viridis",
        zmin=-limit if limit else None, zmax=limit, colorbar={"title": colour_title}))
    figure.update_layout(title=title, template=TEMPLATE, xaxis_title=x_title, yaxis_title=y_title,
                         yaxis={"autorange": "reversed"})
    return figure


def language_overlap(mask: NeuronMask) -> go.Figure:
    """Jaccard overlap between the languages' neuron sets within one mask."""
    return heatmap(mask.language_jaccard(), mask.languages, mask.languages,
                   title=f"{mask.method}: Jaccard overlap between languages", x_title="language",
                   y_title="language", colour_title="Jaccard")


def method_overlap(masks: dict[str, NeuronMask]) -> go.Figure:
    """Per language (rows), the Jaccard overlap of every pair of methods (columns)."""
    names = list(masks)
    pairs = [(a, b) for index, a in enumerate(names) for b in names[index + 1:]]
    languages = [code for code in masks[names[0]].languages if all(code in m.languages for m in masks.values())]
    matrix = torch.tensor([[masks[a].jaccard_with(masks[b])[code] for a, b in pairs] for code in languages])
    return heatmap(matrix, languages, [f"{a} vs {b}" for a, b in pairs], title="Jaccard overlap between methods",
                   x_title="method pair", y_title="language", colour_title="Jaccard")


def category_shares(shares: dict[str, Sequence[float]], bridge_layers: Sequence[int],
                    title: str = "CLAS neuron categories by layer") -> go.Figure:
    """Stacked category shares per layer, the chosen bridge layers shaded."""
    figure = go.Figure()
    for name in CATEGORIES:
        values = list(shares[name])
        figure.add_trace(go.Bar(x=list(range(len(values))), y=values, name=name,
                                marker_color=_CATEGORY_COLOURS[name]))
    if bridge_layers:
        figure.add_vrect(x0=min(bridge_layers) - 0.5, x1=max(bridge_layers) + 0.5, line_width=2,
                         line_color="black", fillcolor="rgba(0,0,0,0)",
                         annotation_text=f"bridge layers {min(bridge_layers)}-{max(bridge_layers)}",
                         annotation_position="top left")
    figure.update_layout(barmode="stack", template=TEMPLATE, title=title, xaxis_title="layer (block index)",
                         yaxis_title="share of the layer's neurons", legend_title="category")
    return figure
