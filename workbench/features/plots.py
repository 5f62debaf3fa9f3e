"""Figures of the feature analysis (each returns a ``go.Figure``) and the snippet dashboard (HTML text)."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from workbench.plots import TEMPLATE, language_colour

_SIDE_SYMBOL = {"target": "circle", "english": "diamond", None: "x"}


def _snippet_lines(snippets: list[dict[str, Any]], limit: int = 3) -> str:
    lines = []
    for s in snippets[:limit]:
        text = f"[{s['group']}] {s['left']}«{s['token']}»{s['right']}".replace("\n", " ")
        lines.append(html.escape(text[:120]) + f" ({s['activation']:.2f})")
    return "<br>".join(lines) or "(no snippets)"


def selectivity_lift_figure(report: Any) -> go.Figure:
    """Selectivity vs causal lift of every candidate, one trace per site (toggle layers in the legend); hovering a
    point shows the feature's score, side and top snippets."""
    figure = go.Figure()
    frame = pd.DataFrame(report.candidates)
    if frame.empty:
        figure.update_layout(title="no candidate features", template=TEMPLATE)
        return figure
    for site, rows in frame.groupby("site", sort=False):
        hover = [f"<b>{site} #{r['index']}</b><br>side: {r['side']}, score {r['score']:.3g}<br>"
                 f"Sel {r['selectivity']:.2f}, lift {r['lift']:.3g}<br>"
                 + _snippet_lines(report.snippets.get(f"{site}/{r['index']}", []))
                 for _, r in rows.iterrows()]
        figure.add_trace(go.Scatter(
            x=rows["selectivity"], y=rows["lift"], mode="markers", name=str(site),
            marker={"symbol": [_SIDE_SYMBOL.get(side, "x") for side in rows["side"]], "size": 9,
                    "line": {"width": 0.5, "color": "#333"}},
            hovertext=hover, hoverinfo="text"))
    figure.add_hline(y=0, line_width=1, line_color="#999")
    figure.add_vline(x=0, line_width=1, line_color="#999")
    figure.update_layout(template=TEMPLATE, title=f"SAE features: selectivity vs lift ({report.target} vs en); "
                         "circle = target-promoting, diamond = English-promoting",
                         xaxis_title=f"selectivity Sel ({report.target} - en)",
                         yaxis_title="lift: median dM / a (per natural activation)", legend_title="site")
    return figure


def layer_counts_figure(report: Any) -> go.Figure:
    """Per site: kept target-promoting and English-promoting features and LangFIR survivors."""
    frame = pd.DataFrame(report.site_counts)
    figure = go.Figure()
    if frame.empty:
        return figure
    labels = [f"{row.layer}.{row.kind}" for row in frame.itertuples()]
    for column, colour, name in (("target", language_colour(report.target), f"{report.target}-promoting"),
                                 ("english", language_colour("en"), "English-promoting"),
                                 ("langfir", "#009E73", "LangFIR survivors")):
        figure.add_trace(go.Bar(x=labels, y=frame[column], name=name, marker_color=colour))
    figure.update_layout(template=TEMPLATE, barmode="group", title="Language features per site",
                         xaxis_title="site (layer.kind)", yaxis_title="features")
    return figure


def ablation_heatmap(rows: list[dict[str, Any]]) -> go.Figure:
    """Features x languages: change of held-out cross-entropy (nats/token) when the feature is ablated."""
    if not rows:
        return go.Figure()
    languages = list(rows[0]["delta_ce"])
    labels = [f"{r['site'].replace('blocks.', '').replace('.hook_', '.')} #{r['index']} ({r.get('group', '')})"
              for r in rows]
    values = [[r["delta_ce"][lang] for lang in languages] for r in rows]
    limit = max(1e-6, max(abs(v) for row in values for v in row))
    figure = go.Figure(go.Heatmap(z=values, x=languages, y=labels, colorscale="RdBu_r", zmin=-limit, zmax=limit,
                                  colorbar={"title": "dCE (nats)"},
                                  text=[[f"{v:+.3f}" for v in row] for row in values], texttemplate="%{text}"))
    figure.update_layout(template=TEMPLATE, title="Single-feature ablation: CE change per language",
                         xaxis_title="held-out language", yaxis_title="feature", yaxis_autorange="reversed")
    return figure


def dashboard_html(report: Any) -> str:
    """A small text dashboard: each kept feature and LangFIR survivor with its scores and top snippets."""
    parts = [f"<html><head><meta charset='utf-8'><title>Features {html.escape(report.target)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto} .f{border-top:1px solid #ccc;"
             "padding:6px} mark{background:#ffe08a} .s{font-family:monospace;font-size:90%;margin-left:1em}</style>",
             f"</head><body><h1>SAE language features: {html.escape(report.target)} vs English</h1>"]

    def block(title: str, key: str, detail: str) -> None:
        parts.append(f"<div class='f'><b>{html.escape(title)}</b> {html.escape(detail)}")
        for s in report.snippets.get(key, []):
            parts.append(f"<div class='s'>[{html.escape(s['group'])}] {s['activation']:.2f}: "
                         f"{html.escape(s['left'])}<mark>{html.escape(s['token'])}</mark>"
                         f"{html.escape(s['right'])}</div>")
        parts.append("</div>")

    for side in ("target", "english"):
        parts.append(f"<h2>{'Target' if side == 'target' else 'English'}-promoting features</h2>")
        for f in [f for f in report.features if f["side"] == side]:
            block(f"{f['site']} #{f['index']}", f"{f['site']}/{f['index']}",
                  f"score {f['score']:.3g} | Sel {f['selectivity']:.2f} | lift {f['lift']:.3g} | "
                  f"fires on {f['firing_rate_target']:.1%} {report.target} / {f['firing_rate_en']:.1%} en tokens")
    parts.append("<h2>LangFIR survivors</h2>")
    for r in report.langfir:
        block(f"{r['site']} #{r['index']}", f"{r['site']}/{r['index']}",
              f"target rate {r['target_rate']:.1%} | random rate {r['random_rate']:.2%} | en rate {r['en_rate']:.1%}")
    parts.append("</body></html>")
    return "\n".join(parts)
