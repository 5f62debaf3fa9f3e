"""A neuron study end to end: identify one method's neurons (from the cached data of :mod:`.cache`), check them
causally, write artifacts.

:func:`run_neurons` writes to an output directory: ``mask/`` (the method's mask), ``summary.json``, figures
(``*.html``) and, for LAPE, ``ppl_delta.csv`` and the other methods' masks under ``masks/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import Tensor

from workbench.artifacts import atomic_write_json, atomic_write_text, save_tensors
from workbench.backends import Model
from workbench.models import load_model
from workbench.neurons import plots
from workbench.neurons.cache import NeuronRunConfig, cached_gate_values, identify
from workbench.neurons.causal import CausalConfig, DeactivationResult, deactivation_matrix


def _write_figure(figure: Any, path: Path) -> str:
    atomic_write_text(path, figure.to_html(include_plotlyjs="cdn"))
    return path.name


def _matrix_dict(matrix: Tensor, rows: Sequence[str], columns: Sequence[str]) -> dict[str, dict[str, float]]:
    return {r: {c: round(float(matrix[i, j]), 4) for j, c in enumerate(columns)} for i, r in enumerate(rows)}


def run_neurons(method: str, out_dir: str | Path, config: NeuronRunConfig = NeuronRunConfig(), *,
                model: Model | None = None, cache_root: str | Path | None = None, progress: bool = True,
                harvest: str | Path | None = None) -> dict[str, Any]:
    """Identify ``method``'s neurons for ``config.languages`` and write mask, summary and figures to ``out_dir``.

    LAPE runs also write the deactivation perplexity matrix (``ppl_delta.csv``, heatmaps, ``ppl_delta`` in the
    summary with its random control) and, with ``compare_methods``, the 90p and AP masks and their overlaps.
    LAPE and 90p read their token statistics from the saved harvest ``harvest`` when given (``workbench harvest``).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    model = model or load_model(backend="hf")
    mask = identify(method, model, config, cache_root=cache_root, progress=progress, harvest=harvest)
    mask.save(out_dir / "mask")
    languages = mask.languages
    summary: dict[str, Any] = {**mask.summary(), "languages": list(languages),
                               "n_layers": mask.n_layers, "d_mlp": mask.d_mlp, "config": mask.config}
    summary["jaccard_languages"] = _matrix_dict(mask.language_jaccard(), languages, languages)
    figures = [_write_figure(plots.neurons_per_layer(mask), out_dir / "neurons_per_layer.html"),
               _write_figure(plots.language_overlap(mask), out_dir / "jaccard_languages.html")]
    if method == "clas":
        summary["bridge_layers"] = mask.config["bridge_layers"]
        summary["bridge_layers_by_item_fraction"] = mask.config["bridge_layers_by_item_fraction"]
        summary["category_shares"] = mask.config["category_shares"]
        figures.append(_write_figure(plots.category_shares(mask.config["category_shares"],
                                                           mask.config["bridge_layers"]),
                                     out_dir / "category_shares.html"))
    if method in ("lape", "ap90"):
        values = cached_gate_values(model, languages, config.tokens, cache_root=cache_root, progress=progress,
                                    harvest=harvest)
        save_tensors(values, out_dir / "gate_values.safetensors")
    if method == "lape" and config.compare_methods:
        masks = {"lape": mask}
        for other in ("ap90", "expertise"):
            masks[other] = identify(other, model, config, cache_root=cache_root, progress=progress, harvest=harvest)
            masks[other].save(out_dir / "masks" / other)
        summary["jaccard_methods"] = {f"{a} vs {b}": masks[a].jaccard_with(masks[b])
                                      for i, a in enumerate(masks) for b in list(masks)[i + 1:]}
        summary["methods_per_language"] = {name: m.per_language() for name, m in masks.items()}
        figures.append(_write_figure(plots.method_overlap(masks), out_dir / "jaccard_methods.html"))
    if method == "lape" and config.run_causal:
        result = deactivation_matrix(model, mask, config.causal, progress=progress)
        summary.update(_causal_summary(result, config.causal))
        atomic_write_text(out_dir / "ppl_delta.csv", result.frame().to_csv(index=False))
        figures += _causal_figures(result, out_dir)
    summary["figures"] = figures
    summary["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _causal_summary(result: DeactivationResult, config: CausalConfig) -> dict[str, Any]:
    return {"ppl_delta": result.as_dict(result.ppl_delta()),
            "ppl_delta_random": result.as_dict(result.ppl_delta(random=True)),
            "nll_delta": result.as_dict(result.nll_delta()),
            "nll_delta_random": result.as_dict(result.nll_delta(random=True)),
            "ppl_base": {code: round(float(v), 4) for code, v in zip(result.languages, result.base_nll.exp(),
                                                                     strict=True)},
            "n_deactivated": result.n_neurons,
            "causal": {**asdict(config), **result.diagonal_dominance()}}


def _causal_figures(result: DeactivationResult, out_dir: Path) -> list[str]:
    names = []
    for random, stem in ((False, "ppl_delta"), (True, "ppl_delta_random")):
        relative = (result.nll_delta(random).exp() - 1.0) * 100.0
        what = "as many random neurons (same layers)" if random else "the row language's LAPE neurons"
        figure = plots.heatmap(relative, result.languages, result.languages, diverging=True, decimals=1,
                               title=f"Perplexity change (%) with {what} zeroed",
                               x_title="evaluated language (held-out text)", y_title="deactivated language",
                               colour_title="Δ ppl %")
        names.append(_write_figure(figure, out_dir / f"{stem}.html"))
    return names
