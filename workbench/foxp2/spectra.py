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

from workbench import corpus
from workbench.activations import pooled_means
from workbench.artifacts import atomic_write_json, atomic_write_text, load_tensors, read_json, save_tensors
from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.languages import get_language
from workbench.models import model_key, model_metadata
from workbench.plots import TEMPLATE, language_colour
from workbench.sites import Site, resolve_site
from workbench.spectral import (
    SpectralConfig,
    SpectralError,
    choose_window,
    content_contrast,
    difference_matrix,
    layer_spectrum,
    random_support_mass,
    shuffled_pairing,
    top_subspace,
)
from workbench.store import SPECTRA, Store


@dataclass(frozen=True)
class PairDataConfig:
    """Which parallel pairs the difference matrices are built from, and how each sentence is represented."""

    n_pairs: int = 256
    """Parallel English/target pairs (fewer if the split has fewer)."""
    split: str = "discovery"
    """Corpus split (stage II never sees dev or eval text)."""
    kind: str = "resid_post"
    """Site kind; every layer is read in one pass."""
    max_length: int = 96
    """Tokens per sentence at most (BOS included)."""
    batch_size: int = 16
    """Sentences per forward pass."""

    def __post_init__(self) -> None:
        if self.split not in corpus.SPLITS:
            raise WorkbenchError(f"unknown split {self.split!r}; use one of {', '.join(corpus.SPLITS)}")
        if self.n_pairs < 2:
            raise WorkbenchError(f"n_pairs must be >= 2, got {self.n_pairs}")


def pooled_sentences(model: Model, texts: list[str], config: PairDataConfig, *, progress: bool = True,
                     description: str = "pool") -> Float[Tensor, "layer text d"]:
    """Each text's mean activation over its tokens (BOS and padding excluded) at every layer of ``config.kind``."""
    names = [resolve_site(model, Site(layer, config.kind)).hook_name for layer in range(model.cfg.n_layers)]
    return pooled_means(model, texts, names, batch_size=config.batch_size, max_length=config.max_length,
                        progress=progress, description=description)


def pair_representations(model: Model, target: str, source: str = "en", config: PairDataConfig = PairDataConfig(),
                         *, progress: bool = True) -> dict[str, Float[Tensor, "layer pair d"]]:
    """Pooled representations of aligned ``source``/``target`` sentences at every layer, keyed by language."""
    rows = corpus.parallel([source, target], split=config.split, n=config.n_pairs)
    if len(rows) < 2:
        raise WorkbenchError(f"fewer than 2 parallel {source}/{target} pairs in the {config.split} split")
    return {code: pooled_sentences(model, [row.text[code] for row in rows], config, progress=progress,
                                   description=f"pool {config.kind} [{code}]") for code in (source, target)}


@dataclass
class SpectralReport:
    """Stage II of one target language: per-layer spectra, ranks, mass, stability, null models, the window."""

    target: str
    source: str
    frame: pd.DataFrame
    """One row per layer: ranks, mass, stability, their product (``score``) and the null models' values."""
    values: Float[Tensor, "layer k"]
    """Singular values per layer, largest first."""
    bases: dict[int, Float[Tensor, "d rank"]]
    """Layer -> orthonormal basis of its chosen-rank subspace (the steering subspace)."""
    window: tuple[int, int]
    """(first, last) layer of the intervention window."""
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
    representations = pair_representations(model, target, source, data, progress=progress)
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


def analyse_pairs(target_rows: Float[Tensor, "layer pair d"], source_rows: Float[Tensor, "layer pair d"],
                  config: SpectralConfig = SpectralConfig(), *, target: str = "target", source: str = "en",
                  progress: bool = False) -> SpectralReport:
    """Per-layer spectra of ``target - source`` with the null models at the same rank, and the window."""
    generator = torch.Generator().manual_seed(config.seed)
    records, values, bases, means = [], [], {}, []
    for layer in tqdm(range(target_rows.shape[0]), desc="spectra", disable=not progress, unit="layer"):
        difference = difference_matrix(target_rows[layer], source_rows[layer])
        real = layer_spectrum(difference, config, generator)
        shuffled = layer_spectrum(shuffled_pairing(target_rows[layer], source_rows[layer], generator), config,
                                  generator, rank=real.rank)
        contrast = layer_spectrum(content_contrast(source_rows[layer], generator), config, generator, rank=real.rank)
        records.append({"layer": layer, "effective_rank": real.effective_rank, "eigengap_rank": real.eigengap_rank,
                        "rank": real.rank, "mass": real.mass, "stability": real.stability,
                        "score": real.mass * real.stability, "shuffled_mass": shuffled.mass,
                        "shuffled_stability": shuffled.stability, "contrast_mass": contrast.mass,
                        "contrast_stability": contrast.stability,
                        "random_support_mass": random_support_mass(difference, real.rank, generator)})
        values.append(real.values)
        bases[layer] = top_subspace(difference, real.rank)
        means.append(difference.mean(0))
    frame = pd.DataFrame(records)
    window = choose_window(torch.tensor(frame["score"].to_numpy()), config.min_width, config.max_width)
    null_corrected = (frame["mass"] - frame["contrast_mass"]).clip(lower=0) * frame["stability"]
    frame["null_corrected_score"] = null_corrected
    alternative = choose_window(torch.tensor(null_corrected.to_numpy()), config.min_width, config.max_width)
    return SpectralReport(target, source, frame, torch.stack(values), bases, window, torch.stack(means),
                          {"spectral": asdict(config), "n_pairs": int(target_rows.shape[1]),
                           "null_corrected_window": list(alternative)})


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
    """Captured mass and stability by layer, against the null models, with ranks and the window marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    frame = report.frame
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=("captured mass and stability (real vs null models)", "ranks"))
    colour = language_colour(report.target)
    lines = [("mass", "mass", colour, "solid"), ("stability", "stability", colour, "dot"),
             ("shuffled_mass", "mass, shuffled pairing", "#999999", "solid"),
             ("contrast_mass", "mass, content contrast", "#666666", "dash"),
             ("random_support_mass", "mass, random support", "#BBBBBB", "dashdot"),
             ("shuffled_stability", "stability, shuffled pairing", "#999999", "dot")]
    for column, name, line_colour, dash in lines:
        figure.add_trace(go.Scatter(x=frame["layer"], y=frame[column], name=name, mode="lines+markers",
                                    line={"color": line_colour, "dash": dash}), row=1, col=1)
    for column, name in (("effective_rank", "effective rank"), ("eigengap_rank", "eigengap rank"),
                         ("rank", "chosen rank")):
        figure.add_trace(go.Scatter(x=frame["layer"], y=frame[column], name=name, mode="lines+markers"), row=2, col=1)
    first, last = report.window
    for row in (1, 2):
        figure.add_vrect(x0=first - 0.5, x1=last + 0.5, fillcolor="rgba(0,0,0,0.07)", line_width=0, row=row, col=1)
    figure.update_layout(template=TEMPLATE, title=f"{report.source}->{report.target}: intervention window "
                         f"{first}-{last} (shaded)", legend_title="curve")
    figure.update_xaxes(title_text="layer (block index)", row=2, col=1)
    figure.update_yaxes(title_text="share (0-1)", row=1, col=1)
    figure.update_yaxes(title_text="rank", row=2, col=1)
    return figure
