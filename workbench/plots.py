"""Plotly figure builders: each takes tidy data and returns a ``go.Figure`` (never shows it)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

LANGUAGE_COLOURS = {  # Okabe-Ito, colourblind-safe; fixed per language across every figure
    "en": "#000000", "hi": "#E69F00", "es": "#56B4E9", "zh": "#009E73", "ja": "#F0E442", "ru": "#0072B2",
    "ar": "#D55E00", "de": "#CC79A7", "fr": "#999999",
}
TEMPLATE = "plotly_white"


def language_colour(code: str) -> str:
    return LANGUAGE_COLOURS.get(code, "#666666")


def layer_profile(frame: pd.DataFrame, *, value: str, title: str, y_title: str) -> go.Figure:
    """One line per language: ``frame`` has columns ``layer``, ``language`` and ``value``."""
    figure = go.Figure()
    for language, rows in frame.groupby("language", sort=False):
        figure.add_trace(go.Scatter(x=rows["layer"], y=rows[value], mode="lines+markers", name=str(language),
                                    line={"color": language_colour(str(language))}))
    figure.update_layout(title=title, template=TEMPLATE, xaxis_title="layer (block index)", yaxis_title=y_title,
                         legend_title="target language")
    return figure
