"""Neural FOXP2 stage II on a model: English->target difference matrices per layer, their spectra, null models and
the intervention window, cached and written as artifacts.

    report = spectral_stage(model, "hi")                 # every layer of hook_resid_post, 256 discovery pairs
    report.window, report.frame                           # (first, last) layer; one row per layer
    report.target_vector(4)                               # v_tgt at layer 4: the mean difference on the subspace
    report.write("figures/foxp2/hi")                      # spectral.json, spectral.csv, spectral.safetensors, html
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.artifacts import atomic_write_json, atomic_write_text, load_tensors, read_json, save_tensors
from workbench.backends import Model
from workbench.foxp2.pairs import PairDataConfig, pair_representations
from workbench.languages import get_language
from workbench.models import model_key, model_metadata
from workbench.plots import TEMPLATE, language_colour
from workbench.spectral import (
    WINDOW_SCORES,
    SpectralConfig,
    SpectralError,
    centred_mass,
    choose_window,
    content_contrast,
    difference_matrix,
    fisher_ratio,
    layer_spectrum,
    random_support_mass,
    shuffled_pairing,
    swapped_sides,
    top_subspace,
)
from workbench.store import SPECTRA, Store


@dataclass
class SpectralReport:
    """Stage II of one target language: per-layer spectra, ranks, mass, stability, null models, the window."""

    target: str
    source: str
    frame: pd.DataFrame
    """One row per layer: ranks, mass, stability, their product (``score``), the centred masses, the Fisher ratio,
    every score's null model, and the source rows' median norm (``median_norm``)."""
    values: Float[Tensor, "layer k"]
    """Singular values per layer, largest first."""
    bases: dict[int, Float[Tensor, "d rank"]]
    """Layer -> orthonormal basis of its chosen-rank subspace (the steering subspace)."""
    window: tuple[int, int]
    """(first, last) layer of the window ``SpectralConfig.window_score`` picks."""
    mean_differences: Float[Tensor, "layer d"]
    """Per layer, the mean over pairs of ``target - source`` (the pooled DiffMean the target vector comes from)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Data and spectral settings, model metadata, timings."""

    @property
    def layers(self) -> list[int]:
        """The window's layers, first to last."""
        return list(range(self.window[0], self.window[1] + 1))

    def target_vector(self, layer: int) -> Float[Tensor, " d"]:
        """``v_tgt[layer]``: the mean difference projected onto the layer's rank-r steering subspace."""
        if layer not in self.bases:
            raise SpectralError(f"layer {layer} is not in the report (layers 0..{len(self.bases) - 1})")
        basis = self.bases[layer]
        return basis @ (basis.T @ self.mean_differences[layer])

    def normalised_target_vector(self, layer: int) -> Float[Tensor, " d"]:
        """``v_tgt[layer]`` rescaled to the layer's median residual norm (``median_norm``, measured on the source
        rows), so one unit of strength is the same relative change at every depth."""
        vector = self.target_vector(layer)
        return vector / vector.norm().clamp_min(1e-12) * float(self.frame.loc[layer, "median_norm"])

    def windows(self) -> dict[str, tuple[int, int]]:
        """Each score's window (:data:`workbench.spectral.WINDOW_SCORES`)."""
        return {name: (int(w[0]), int(w[1])) for name, w in self.config.get("windows", {}).items()}

    def write(self, out_dir: str | Path) -> Path:
        """``spectral.json``, ``spectral.csv``, ``spectral.safetensors`` and the two figures."""
        out_dir = Path(out_dir)
        save_tensors({"values": self.values, "mean_differences": self.mean_differences,
                      **{f"basis/{layer}": b for layer, b in self.bases.items()}},
                     out_dir / "spectral.safetensors")
        atomic_write_text(out_dir / "spectral.csv", self.frame.to_csv(index=False))
        atomic_write_json(out_dir / "spectral.json", {"target": self.target, "source": self.source,
                                                      "window": list(self.window),
                                                      "layers": self.frame.to_dict(orient="records"),
                                                      "config": self.config})
        atomic_write_text(out_dir / "spectra.html", spectra_figure(self).to_html(include_plotlyjs="cdn"))
        atomic_write_text(out_dir / "spectral_profile.html",
                          spectral_profile_figure(self).to_html(include_plotlyjs="cdn"))
        return out_dir

    @classmethod
    def load(cls, directory: str | Path) -> SpectralReport:
        directory = Path(directory)
        info = read_json(directory / "spectral.json")
        tensors = load_tensors(directory / "spectral.safetensors")
        bases = {int(name.split("/")[1]): t for name, t in tensors.items() if name.startswith("basis/")}
        return cls(info["target"], info["source"], pd.DataFrame(info["layers"]), tensors["values"], bases,
                   tuple(info["window"]), tensors["mean_differences"], info["config"])


def spectral_stage(model: Model, target: str, source: str = "en", data: PairDataConfig = PairDataConfig(),
                   config: SpectralConfig = SpectralConfig(), *, use_cache: bool = True, progress: bool = True
                   ) -> SpectralReport:
    """Stage II for ``target``: a :data:`workbench.store.SPECTRA` entry per (model, languages, data, config)."""
    for code in (target, source):
        get_language(code)
    entry = Store().entry(SPECTRA, {"model": model_key(model), "target": target, "source": source,
                                    "data": asdict(data), "spectral": asdict(config)},
                          scope=model_key(model), label=f"{target}-{source}")
    if use_cache and entry.ready():
        return SpectralReport.load(entry.path)
    started = time.perf_counter()
    representations = pair_representations(model, target, source, data, use_cache=use_cache, progress=progress)
    pooled_seconds = time.perf_counter() - started
    report = analyse_pairs(representations[target], representations[source], config, target=target, source=source,
                           progress=progress)
    report.config.update({"data": asdict(data), "model": model_metadata(model),
                          "seconds": {"pool": round(pooled_seconds, 1),
                                      "analysis": round(time.perf_counter() - started - pooled_seconds, 1)}})
    entry.clear()
    report.write(entry.prepare())
    entry.commit()
    return report


def layer_record(target: Float[Tensor, "pair d"], english: Float[Tensor, "pair d"], config: SpectralConfig,
                 generator: torch.Generator
                 ) -> tuple[dict[str, float | int], Float[Tensor, " k"], Float[Tensor, "d rank"]]:
    """One layer's scores and null models, its singular values and its steering subspace."""
    difference = difference_matrix(target, english)
    real = layer_spectrum(difference, config, generator)
    shuffled = shuffled_pairing(target, english, generator)
    shuffled_spectrum = layer_spectrum(shuffled, config, generator, rank=real.rank)
    contrast = content_contrast(english, generator)
    contrast_spectrum = layer_spectrum(contrast, config, generator, rank=real.rank)
    centred_real, centred_rank = centred_mass(difference, max_gap_rank=config.max_gap_rank)
    centred_shuffled, _ = centred_mass(shuffled, centred_rank)
    record = {"effective_rank": real.effective_rank, "eigengap_rank": real.eigengap_rank, "rank": real.rank,
              "mass": real.mass, "stability": real.stability, "score": real.mass * real.stability,
              "shuffled_mass": shuffled_spectrum.mass, "shuffled_stability": shuffled_spectrum.stability,
              "contrast_mass": contrast_spectrum.mass, "contrast_stability": contrast_spectrum.stability,
              "random_support_mass": random_support_mass(difference, real.rank, generator),
              "centred_rank": centred_rank, "centred_mass": centred_real, "centred_shuffled_mass": centred_shuffled,
              "centred_contrast_mass": centred_mass(contrast, centred_rank)[0],
              "mass_excess": centred_real - centred_shuffled, "fisher": fisher_ratio(target, english),
              "fisher_null": fisher_ratio(*swapped_sides(target, english, generator)),
              "median_norm": float(english.norm(dim=-1).median())}
    return record, real.values, top_subspace(difference, real.rank)


def analyse_pairs(target_rows: Float[Tensor, "layer pair d"], source_rows: Float[Tensor, "layer pair d"],
                  config: SpectralConfig = SpectralConfig(), *, target: str = "target", source: str = "en",
                  progress: bool = False) -> SpectralReport:
    """Per-layer spectra of ``target - source``, the scores that can separate from chance with their nulls, a
    window per score (:data:`WINDOW_SCORES`) and the one ``config.window_score`` picks."""
    generator = torch.Generator().manual_seed(config.seed)
    records, values, bases, means = [], [], {}, []
    for layer in tqdm(range(target_rows.shape[0]), desc="spectra", disable=not progress, unit="layer"):
        record, layer_values, basis = layer_record(target_rows[layer], source_rows[layer], config, generator)
        records.append({"layer": layer, **record})
        values.append(layer_values)
        bases[layer] = basis
        means.append((target_rows[layer].double() - source_rows[layer].double()).mean(0).float())
    frame = pd.DataFrame(records)
    windows = {name: choose_window(torch.tensor(frame[column].to_numpy()), config.min_width, config.max_width)
               for name, column in WINDOW_SCORES.items()}
    return SpectralReport(target, source, frame, torch.stack(values), bases, windows[config.window_score],
                          torch.stack(means), {"spectral": asdict(config), "n_rows": int(target_rows.shape[1]),
                                               "windows": {name: list(w) for name, w in windows.items()}})


def spectra_figure(report: SpectralReport, n_values: int = 32) -> Any:
    """Normalised singular values ``s_i / s_1`` per layer on a log scale (darker = deeper layer)."""
    import plotly.graph_objects as go
    from plotly.colors import sample_colorscale

    figure = go.Figure()
    n_layers = report.values.shape[0]
    colours = sample_colorscale("Viridis", [i / max(n_layers - 1, 1) for i in range(n_layers)])
    for layer in range(n_layers):
        values = report.values[layer, :n_values]
        figure.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=(values / values[0]).tolist(),
                                    mode="lines", name=f"layer {layer}", line={"color": colours[layer]}))
    figure.update_layout(template=TEMPLATE, yaxis_type="log", xaxis_title="singular value index i",
                         yaxis_title="s_i / s_1 (log scale)", legend_title="layer",
                         title=f"Spectra of the {report.source}->{report.target} difference matrices per layer")
    return figure


def spectral_profile_figure(report: SpectralReport) -> Any:
    """Every stage II score by layer against its null models (the literal captured mass and stability, the centred
    mass, the Fisher ratio), the ranks, and the window shaded (each score's own window in the title)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    frame = report.frame
    figure = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.06, subplot_titles=(
        "captured mass and stability, uncentred (paper-literal) vs null models",
        "captured mass of the centred differences vs centred null models",
        "Fisher ratio |mean difference|^2 / tr(within-language covariance) vs swapped sides", "ranks"))
    colour = language_colour(report.target)
    panels = {1: [("mass", "mass", colour, "solid"), ("stability", "stability", colour, "dot"),
                  ("shuffled_mass", "mass, shuffled pairing", "#999999", "solid"),
                  ("contrast_mass", "mass, content contrast", "#666666", "dash"),
                  ("random_support_mass", "mass, random support", "#BBBBBB", "dashdot"),
                  ("shuffled_stability", "stability, shuffled pairing", "#999999", "dot")],
              2: [("centred_mass", "centred mass", colour, "solid"),
                  ("centred_shuffled_mass", "centred mass, shuffled pairing", "#999999", "solid"),
                  ("centred_contrast_mass", "centred mass, content contrast", "#666666", "dash")],
              3: [("fisher", "Fisher ratio", colour, "solid"), ("fisher_null", "Fisher ratio, swapped sides",
                                                                "#999999", "solid")],
              4: [("effective_rank", "effective rank", None, "solid"), ("eigengap_rank", "eigengap rank", None, "dot"),
                  ("rank", "chosen rank", None, "dash")]}
    for row, lines in panels.items():
        for column, name, line_colour, dash in lines:
            if column in frame:
                figure.add_trace(go.Scatter(x=frame["layer"], y=frame[column], name=name, mode="lines+markers",
                                            line={"color": line_colour, "dash": dash}), row=row, col=1)
    first, last = report.window
    for row in panels:
        figure.add_vrect(x0=first - 0.5, x1=last + 0.5, fillcolor="rgba(0,0,0,0.07)", line_width=0, row=row, col=1)
    windows = "; ".join(f"{name} {w[0]}-{w[1]}" for name, w in report.config.get("windows", {}).items())
    figure.update_layout(template=TEMPLATE, height=1000, legend_title="curve",
                         title=f"{report.source}->{report.target}: window {first}-{last} (shaded)"
                               + (f"; by score: {windows}" if windows else ""))
    figure.update_xaxes(title_text="layer (block index)", row=4, col=1)
    for row in (1, 2):
        figure.update_yaxes(title_text="share (0-1)", row=row, col=1)
    figure.update_yaxes(title_text="ratio (log)", type="log", row=3, col=1)
    figure.update_yaxes(title_text="rank", row=4, col=1)
    return figure
