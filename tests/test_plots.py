"""Every plot builder returns a figure with the expected traces, axes and shapes; paper-figure styling and the
figure regeneration's bookkeeping (no model needed)."""

import json

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from workbench.features.plots import ablation_heatmap, layer_counts_figure, selectivity_lift_figure
from workbench.figures import regenerate
from workbench.foxp2.report import comparison_figure
from workbench.neurons import NeuronMask
from workbench.neurons import plots as neuron_plots
from workbench.plots import LANGUAGE_COLOURS, OKABE_ITO, heatmap, language_colour, layer_profile, style
from workbench.saes.quality import quality_figure
from workbench.static_export import ExportError


def test_layer_profile_has_one_line_per_language_in_its_fixed_colour():
    frame = pd.DataFrame({"layer": [0, 1, 0, 1], "language": ["hi", "hi", "es", "es"], "distance": [1, 2, 3, 4]})
    figure = layer_profile(frame, value="distance", title="t", y_title="distance (units)")
    assert [t.name for t in figure.data] == ["hi", "es"]
    assert [t.line.color for t in figure.data] == [LANGUAGE_COLOURS["hi"], LANGUAGE_COLOURS["es"]]
    assert figure.layout.xaxis.title.text == "layer (block index)" and figure.layout.yaxis.title.text


def test_heatmap_pivots_tidy_rows_and_leaves_gaps_blank():
    frame = pd.DataFrame({"method": ["a", "a", "b"], "target": ["hi", "es", "hi"], "score": [0.1, 0.2, 0.3]})
    figure = heatmap(frame, x="target", y="method", value="score", title="t", x_title="x", y_title="y",
                     colour_title="c")
    (trace,) = figure.data
    assert list(trace.x) == ["hi", "es"] and list(trace.y) == ["a", "b"]
    assert trace.z[1][0] == pytest.approx(0.3) and pd.isna(trace.z[1][1])


def test_style_sets_the_house_palette_without_touching_language_colours():
    figure = style(go.Figure(go.Scatter(x=[0], y=[0], line={"color": language_colour("hi")})))
    assert tuple(figure.layout.colorway) == OKABE_ITO and figure.layout.font.family.startswith("DejaVu")
    assert figure.data[0].line.color == LANGUAGE_COLOURS["hi"]
    assert len(set(LANGUAGE_COLOURS.values())) == len(LANGUAGE_COLOURS)


def _mask() -> NeuronMask:
    mask = torch.zeros(3, 8, 2, dtype=torch.bool)
    mask[0, 1, 0] = mask[2, 3, 1] = mask[2, 4, 1] = True
    return NeuronMask(mask=mask, languages=("en", "hi"), method="lape")


def test_neuron_figures():
    per_layer = neuron_plots.neurons_per_layer(_mask())
    assert [t.name for t in per_layer.data] == ["en", "hi"] and list(per_layer.data[1].y) == [0, 0, 2]
    assert per_layer.layout.barmode == "stack" and per_layer.layout.yaxis.title.text == "neurons"
    overlap = neuron_plots.language_overlap(_mask())
    assert overlap.data[0].z[0][0] == pytest.approx(1.0) and overlap.data[0].z[0][1] == pytest.approx(0.0)
    shares = {name: [0.25] * 3 for name in ("dead", "language-specific", "partial-shared", "all-shared")}
    categories = neuron_plots.category_shares(shares, [1, 2])
    assert len(categories.data) == 4 and len(categories.layout.shapes) == 1
    assert categories.layout.shapes[0].x0 == 0.5 and categories.layout.shapes[0].x1 == 2.5
    matrix = neuron_plots.heatmap(torch.tensor([[1.0, -2.0], [0.5, 0.0]]), ["en", "hi"], ["en", "hi"], title="t",
                                  x_title="x", y_title="y", diverging=True)
    assert matrix.data[0].zmin == -2.0 and matrix.data[0].zmax == 2.0


class _Report:
    target = "hi"
    candidates = [{"site": "blocks.6.hook_resid_post", "index": 1, "selectivity": 1.0, "lift": 0.1, "score": 0.1,
                   "side": "target"},
                  {"site": "blocks.6.hook_resid_post", "index": 2, "selectivity": -1.0, "lift": -0.1, "score": 0.1,
                   "side": "english"},
                  {"site": "blocks.7.hook_resid_post", "index": 3, "selectivity": 0.1, "lift": 0.0, "score": 0.0,
                   "side": None}]
    snippets: dict = {}
    site_counts = [{"site": "blocks.6.hook_resid_post", "layer": 6, "kind": "resid_post", "target": 1, "english": 1,
                    "langfir": 0}]


def test_feature_figures():
    scatter = selectivity_lift_figure(_Report())
    assert [t.name for t in scatter.data] == ["blocks.6.hook_resid_post", "blocks.7.hook_resid_post"]
    assert list(scatter.data[0].marker.symbol) == ["circle", "diamond"]
    counts = layer_counts_figure(_Report())
    assert [t.name for t in counts.data] == ["hi-promoting", "English-promoting", "LangFIR survivors"]
    rows = [{"site": "blocks.6.hook_resid_post", "index": 1, "group": "foxp2-target",
             "delta_ce": {"hi": 0.2, "en": -0.01}}]
    ablation = ablation_heatmap(rows)
    assert list(ablation.data[0].x) == ["hi", "en"] and ablation.data[0].zmax == pytest.approx(0.2)


def test_sae_quality_and_foxp2_comparison_figures():
    reports = {"blocks.6.hook_resid_post": {"site": "blocks.6.hook_resid_post", "fvu": 0.1, "l0": 32,
                                            "dead_share": 0.03, "ce_recovered_zero": 0.9, "ce_recovered_mean": 0.8}}
    quality = quality_figure(reports)
    assert len(quality.data) == 5 and quality.layout.yaxis.title.text.startswith("FVU")
    frame = pd.DataFrame({"method": ["foxp2", "none"], **{k: [0.5, 0.0] for k in (
        "lid_success", "relevance", "steering_score")}, **{f"{k}_ci_{side}": [0.4 if side == "low" else 0.6, 0.0]
                                                           for k in ("lid_success", "relevance", "steering_score")
                                                           for side in ("low", "high")}})
    comparison = comparison_figure(frame, "hi")
    assert [t.name for t in comparison.data] == ["LID", "relevance", "score"]
    assert list(comparison.data[0].error_y.array) == pytest.approx([0.1, 0.0])
    assert comparison.data[0].marker.color == LANGUAGE_COLOURS["hi"]


def test_regenerate_skips_missing_families_with_the_command_and_rejects_unknown_formats(tmp_path):
    (tmp_path / "bench").mkdir()
    pd.DataFrame({"method": ["none", "diffmean"], "target": ["hi", "hi"], "selection": ["fixed", "calibrated"],
                  "steering_score": [0.0, 0.4]}).to_csv(tmp_path / "bench" / "results.csv", index=False)
    from workbench.features.cards import FeatureCard

    card = FeatureCard("blocks.6.hook_resid_post", 7, ["en", "hi"], {"en": 0.0, "hi": 0.2},
                       {"en": [], "hi": [1.5, 2.0]}, {"en": [], "hi": []}, None, None, None)
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "latent-7.json").write_text(json.dumps(card.to_dict()))
    records = regenerate(tmp_path, formats=("html",))
    built = [r for r in records if "figure" in r]
    assert [r["figure"] for r in built] == ["bench_method_language", "card_latent_7"]
    assert (tmp_path / "paper" / "bench_method_language.html").is_file()
    assert "hi (20.0% fire)" in (tmp_path / "paper" / "card_latent_7.html").read_text()
    skipped = {r["family"]: r["skipped"] for r in records if "skipped" in r}
    assert set(skipped) == {"foxp2", "neurons", "sae"} and "workbench neurons lape" in skipped["neurons"]
    assert json.loads((tmp_path / "paper" / "manifest.json").read_text()) == records
    with pytest.raises(ExportError, match="unknown figure format"):
        regenerate(tmp_path, formats=("html", "gif"))


def test_static_export_writes_png_and_svg_without_a_system_browser(tmp_path):
    from workbench.static_export import write_static

    figure = style(go.Figure(go.Bar(x=["hi", "es"], y=[0.8, 0.9], marker_color=[language_colour("hi"),
                                                                                language_colour("es")])))
    figure.update_layout(title="LID success", xaxis_title="target language", yaxis_title="rate (0-1)")
    png = write_static(figure, tmp_path / "lid.png")
    svg = write_static(figure, tmp_path / "lid.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "<svg" in svg.read_text()[:500] and "LID success" in svg.read_text()
    with pytest.raises(ExportError, match="unknown static format"):
        write_static(figure, tmp_path / "lid.gif")
