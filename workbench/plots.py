"""Plotly figure builders: each takes tidy data and returns a ``go.Figure`` (never shows it)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

LANGUAGE_COLOURS = {  # Okabe-Ito, colourblind-safe; fixed per language across every figure
    "en": "#000000", "hi": "#E69F00", "es": "#56B4E9", "zh": "#009E73", "ja": "#F0E442", "ru": "#0072B2",
    "ar": "#D55E00", "de": "#CC79A7", "fr": "#999999",
}
TEMPLATE = "plotly_white"
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000")
"""The colourblind-safe palette every figure cycles through (Okabe & Ito 2008)."""
FONT = {"family": "DejaVu Sans, Arial, sans-serif", "size": 14}


def language_colour(code: str) -> str:
    return LANGUAGE_COLOURS.get(code, "#666666")


def style(figure: go.Figure) -> go.Figure:
    """The house style for paper figures (in place, returned): white template, one font, the Okabe-Ito colourway,
    titles left-aligned. Language colours are set by the builders (:data:`LANGUAGE_COLOURS`)."""
    figure.update_layout(template=TEMPLATE, font=FONT, colorway=list(OKABE_ITO), title_x=0.02,
                         margin={"l": 70, "r": 30, "t": 70, "b": 60})
    return figure


def layer_profile(frame: pd.DataFrame, *, value: str, title: str, y_title: str) -> go.Figure:
    """One line per language: ``frame`` has columns ``layer``, ``language`` and ``value``."""
    figure = go.Figure()
    for language, rows in frame.groupby("language", sort=False):
        figure.add_trace(go.Scatter(x=rows["layer"], y=rows[value], mode="lines+markers", name=str(language),
                                    line={"color": language_colour(str(language))}))
    figure.update_layout(title=title, template=TEMPLATE, xaxis_title="layer (block index)", yaxis_title=y_title,
                         legend_title="target language")
    return figure


def heatmap(frame: pd.DataFrame, *, x: str, y: str, value: str, title: str, x_title: str, y_title: str,
            colour_title: str, text_format: str = ".2f", zmin: float | None = 0.0, zmax: float | None = 1.0
            ) -> go.Figure:
    """A labelled heatmap of ``value`` over the ``x`` and ``y`` columns of a tidy ``frame`` (gaps stay blank)."""
    table = frame.pivot_table(index=y, columns=x, values=value, aggfunc="mean", sort=False)
    figure = go.Figure(go.Heatmap(
        z=table.to_numpy(), x=[str(c) for c in table.columns], y=[str(i) for i in table.index],
        colorscale="Viridis", zmin=zmin, zmax=zmax, texttemplate=f"%{{z:{text_format}}}",
        colorbar={"title": {"text": colour_title}},
        hovertemplate=f"{x_title}: %{{x}}<br>{y_title}: %{{y}}<br>{colour_title}: %{{z:{text_format}}}<extra></extra>"))
    figure.update_layout(title=title, template=TEMPLATE, xaxis_title=x_title, yaxis_title=y_title)
    return figure
