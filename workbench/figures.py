"""Paper figures regenerated from the artifacts the runs wrote: ``workbench figures --out figures/``.

Every figure is rebuilt by the package's own plot builders from the files a run left (``metrics.json``, CSVs,
safetensors), styled alike (:func:`workbench.plots.style`: Okabe-Ito language colours fixed across figures, axis
titles with units) and written as interactive html plus static images (:mod:`workbench.static_export`). A figure
whose artifacts are missing is skipped with the command that produces them.

Artifacts are looked up under ``artifacts`` (default: the output directory itself), in the layout ``make demo``
and the CLI write: ``foxp2/<target>/``, ``bench/``, ``neurons/<method>/``, ``sae/``, ``cards/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from workbench.artifacts import atomic_write_json, atomic_write_text
from workbench.plots import style

console = Console(stderr=True)


@dataclass(frozen=True)
class PaperFigure:
    """One regenerated figure."""

    name: str
    """File stem (``foxp2_hi_trust_region``)."""
    figure: Any
    """The plotly figure."""
    source: Path
    """The artifact it was built from."""


FigureSource = Callable[[Path], Iterator[PaperFigure]]


def _foxp2(root: Path) -> Iterator[PaperFigure]:
    from workbench.features.analysis import FeatureReport
    from workbench.features.plots import selectivity_lift_figure
    from workbench.foxp2.report import comparison_figure, trust_region_figure
    from workbench.foxp2.spectra import SpectralReport, spectra_figure, spectral_profile_figure

    for run in sorted(path.parent for path in (root / "foxp2").glob("*/metrics.json")):
        metrics = json.loads((run / "metrics.json").read_text())
        target = metrics["target"]
        spectral = SpectralReport.load(run / "spectral")
        yield PaperFigure(f"foxp2_{target}_spectra", spectra_figure(spectral), run / "spectral")
        yield PaperFigure(f"foxp2_{target}_spectral_profile", spectral_profile_figure(spectral), run / "spectral")
        yield PaperFigure(f"foxp2_{target}_trust_region",
                          trust_region_figure(metrics["trust_region"], metrics["bounds"], metrics["strength"], target),
                          run / "metrics.json")
        yield PaperFigure(f"foxp2_{target}_comparison", comparison_figure(pd.read_csv(run / "results.csv"), target),
                          run / "results.csv")
        features = run / "features" / "features.json"
        if features.is_file():
            yield PaperFigure(f"foxp2_{target}_selectivity_lift",
                              selectivity_lift_figure(FeatureReport(**json.loads(features.read_text()))), features)


def _bench(root: Path) -> Iterator[PaperFigure]:
    results = root / "bench" / "results.csv"
    if not results.is_file():
        return
    from workbench.bench import frontier_figure, method_language_figure

    yield PaperFigure("bench_method_language", method_language_figure(pd.read_csv(results)), results)
    frontier = root / "bench" / "frontier.csv"
    if frontier.is_file() and len(table := pd.read_csv(frontier)):
        yield PaperFigure("bench_frontier", frontier_figure(table), frontier)


def _neurons(root: Path) -> Iterator[PaperFigure]:
    import torch

    from workbench.neurons import NeuronMask
    from workbench.neurons import plots as neuron_plots

    for run in sorted(path.parent for path in (root / "neurons").glob("*/summary.json")):
        summary = json.loads((run / "summary.json").read_text())
        method = summary["method"]
        mask = NeuronMask.load(run / "mask")
        yield PaperFigure(f"neurons_{method}_per_layer", neuron_plots.neurons_per_layer(mask), run / "mask")
        if "category_shares" in summary:
            yield PaperFigure(f"neurons_{method}_categories", neuron_plots.category_shares(
                summary["category_shares"], summary["bridge_layers"]), run / "summary.json")
        if "nll_delta" in summary:
            languages = list(summary["nll_delta"])
            nll = torch.tensor([[summary["nll_delta"][row][column] for column in languages] for row in languages])
            yield PaperFigure(f"neurons_{method}_nll_delta", neuron_plots.heatmap(
                nll, languages, languages, diverging=True, decimals=2,
                title="NLL change with the row language's neurons zeroed (log-perplexity: +0.69 = ×2)",
                x_title="evaluated language (held-out text)", y_title="deactivated language",
                colour_title="Δ NLL (nats/token)"), run / "summary.json")


def _saes(root: Path) -> Iterator[PaperFigure]:
    from workbench.saes.quality import quality_figure

    quality = root / "sae" / "quality.json"
    if quality.is_file():
        yield PaperFigure("sae_quality", quality_figure(json.loads(quality.read_text())["sites"]), quality)


def _cards(root: Path) -> Iterator[PaperFigure]:
    from workbench.features import cards as feature_cards
    from workbench.neurons import cards as neuron_cards

    for path in sorted((root / "cards").glob("*.json")):
        payload = json.loads(path.read_text(encoding="utf-8"))
        if "latent" in payload:
            card = feature_cards.FeatureCard(**payload)
            yield PaperFigure(f"card_latent_{card.latent}", feature_cards.activation_figure(card), path)
        elif "neuron" in payload:
            card = neuron_cards.NeuronCard(**payload)
            yield PaperFigure(f"card_neuron_{card.layer}_{card.neuron}", neuron_cards.activation_figure(card), path)


SOURCES: dict[str, tuple[FigureSource, str]] = {
    "foxp2": (_foxp2, "make demo, or workbench foxp2 --target LANG --out DIR/foxp2"),
    "bench": (_bench, "make demo, or workbench bench --out DIR/bench"),
    "neurons": (_neurons, "workbench neurons lape --out DIR/neurons/lape (and clas --out DIR/neurons/clas)"),
    "sae": (_saes, "workbench sae train --out DIR/sae, then workbench sae eval DIR/sae"),
    "cards": (_cards, "workbench card feature|neuron ... --out DIR/cards/NAME.html"),
}
"""Figure families: the builder over an artifacts directory, and the command that writes its artifacts."""


def regenerate(out_dir: str | Path, artifacts: str | Path | None = None, *,
               formats: tuple[str, ...] = ("html", "png", "svg")) -> list[dict[str, Any]]:
    """Rebuild every figure whose artifacts exist under ``artifacts`` into ``out_dir/paper/`` in ``formats``;
    returns (and writes as ``manifest.json``) one record per figure, and one per skipped family."""
    from workbench.static_export import STATIC_FORMATS, ExportError, write_static

    unknown = set(formats) - {"html", *STATIC_FORMATS}
    if unknown:
        raise ExportError(f"unknown figure format(s) {sorted(unknown)}; use html, {', '.join(STATIC_FORMATS)}")
    out_dir = Path(out_dir)
    root = Path(artifacts) if artifacts is not None else out_dir
    paper = out_dir / "paper"
    records: list[dict[str, Any]] = []
    for family, (builder, command) in SOURCES.items():
        built = list(builder(root))
        if not built:
            records.append({"family": family, "skipped": f"no artifacts under {root}; produce them with: {command}"})
            continue
        for item in built:
            figure = style(item.figure)
            files = []
            for fmt in formats:
                path = paper / f"{item.name}.{fmt}"
                if fmt == "html":
                    atomic_write_text(path, figure.to_html(include_plotlyjs="cdn"))
                else:
                    try:
                        write_static(figure, path)
                    except ExportError as error:
                        console.print(f"[yellow]{item.name}.{fmt} not written: {error}[/yellow]")
                        continue
                files.append(path.name)
            records.append({"family": family, "figure": item.name, "source": str(item.source), "files": files})
    paper.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paper / "manifest.json", records)
    return records
