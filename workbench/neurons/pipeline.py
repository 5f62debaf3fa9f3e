"""Orchestration of the neuron methods: harvest once (cached), identify, check causally, write artifacts.

Caches are store entries (:mod:`workbench.store`; ``cache_root`` overrides the store's root for one call):

* ``neuron-harvests``: one per language, its ``mlp_pre`` statistics with histograms (one harvest per language serves
  LAPE, 90p and the act(gate) values; any language set reuses them);
* ``neuron-pooled``: sentence-pooled act(gate) on parallel items (CLAS, AP), per language set;
* ``neuron-masks`` and ``neuron-gates``: identified masks and act(gate) statistics, for the steering methods.

:func:`run_neurons` writes to an output directory: ``mask/`` (the method's mask), ``summary.json``, figures
(``*.html``) and, for LAPE, ``ppl_delta.csv`` and the other methods' masks under ``masks/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from workbench.activations import ActivationStats, HarvestConfig, harvest
from workbench.artifacts import atomic_write_json, atomic_write_text, load_tensors, save_tensors
from workbench.models import load_model, model_key, model_metadata
from workbench.neurons import plots
from workbench.neurons.actprob import ActProbConfig, activation_probability_90p
from workbench.neurons.causal import CausalConfig, DeactivationResult, deactivation_matrix
from workbench.neurons.clas import ClasConfig, clas
from workbench.neurons.data import (
    ParallelDataConfig,
    TokenDataConfig,
    monolingual_texts,
    parallel_items,
    pooled_gate_means,
    token_batches,
)
from workbench.neurons.expertise import ExpertiseConfig, expertise
from workbench.neurons.gating import activation_name, gate_statistics, require_gated
from workbench.neurons.lape import LapeConfig, lape
from workbench.neurons.masks import NeuronError, NeuronMask, check_languages
from workbench.sites import sites_for
from workbench.store import NEURON_GATES, NEURON_HARVESTS, NEURON_MASKS, NEURON_POOLED, Entry, Kind, Store

DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "es", "hi", "zh", "ja", "ru", "ar", "de")
METHODS: tuple[str, ...] = ("lape", "ap90", "clas", "expertise")


@dataclass(frozen=True)
class NeuronRunConfig:
    """Everything a neuron run depends on (each part is recorded in the artifacts)."""

    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    """Languages compared (LAPE, 90p, CLAS and AP all depend on the set)."""
    tokens: TokenDataConfig = field(default_factory=TokenDataConfig)
    """Monolingual text of the token-level statistics (LAPE, 90p, act(gate) values)."""
    parallel: ParallelDataConfig = field(default_factory=ParallelDataConfig)
    """Parallel items of the pooled pass (CLAS, AP expertise)."""
    lape: LapeConfig = field(default_factory=LapeConfig)
    """LAPE selection."""
    ap90: ActProbConfig = field(default_factory=ActProbConfig)
    """Activation-probability-90p selection."""
    clas: ClasConfig = field(default_factory=ClasConfig)
    """CLAS categories and bridge layers."""
    expertise: ExpertiseConfig = field(default_factory=ExpertiseConfig)
    """AP-expertise selection."""
    causal: CausalConfig = field(default_factory=CausalConfig)
    """Deactivation perplexity matrix (LAPE runs)."""
    run_causal: bool = True
    """LAPE runs: compute the deactivation perplexity matrix."""
    compare_methods: bool = True
    """LAPE runs: also identify 90p and AP-expertise neurons and report the overlaps."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "languages", check_languages(self.languages))


# --------------------------------------------------------------------------------------------------- caching

def _entry(model: Any, cache_root: str | Path | None, kind: Kind, key: dict[str, Any], label: str) -> Entry:
    return Store(cache_root).entry(kind, {"model": model_key(model), **key}, scope=model_key(model), label=label)


def _harvest_config(tokens: TokenDataConfig) -> HarvestConfig:
    return HarvestConfig(histogram_kinds=("mlp_pre",), histogram_bins=tokens.histogram_bins,
                         histogram_max_abs=tokens.histogram_max_abs)


def language_statistics(model: Any, languages: Sequence[str], tokens: TokenDataConfig = TokenDataConfig(), *,
                        cache_root: str | Path | None = None, progress: bool = True) -> dict[str, ActivationStats]:
    """Per-language ``mlp_pre`` statistics (every layer, with histograms), harvested once and cached.

    Each language's metadata records its rows, tokens and harvest seconds.
    """
    require_gated(model)
    languages = check_languages(languages)
    result = {}
    for code in languages:
        entry = _entry(model, cache_root, NEURON_HARVESTS, {"language": code, "tokens": asdict(tokens)}, code)
        if entry.ready():
            result[code] = ActivationStats.load(entry.path)
            continue
        texts, _ = monolingual_texts(model.tokenizer, code, tokens)
        batches = token_batches(model.tokenizer, texts, code, max_length=tokens.max_length,
                                batch_tokens=tokens.batch_tokens)
        started = time.perf_counter()
        stats = harvest(model, batches, sites_for(model, "mlp_pre"), config=_harvest_config(tokens),
                        total=len(batches), progress=progress, description=f"harvest mlp_pre [{code}]")
        stats.metadata.update({"language": code, "rows": len(texts), "tokens_target": tokens.tokens_per_language,
                               "harvest_seconds": round(time.perf_counter() - started, 2),
                               "data": asdict(tokens)})
        stats.save(entry.prepare())
        entry.commit()
        result[code] = stats
    return result


def pooled_activations(model: Any, languages: Sequence[str], data: ParallelDataConfig = ParallelDataConfig(), *,
                       cache_root: str | Path | None = None, progress: bool = True) -> dict[str, Tensor]:
    """Language -> (item, layer, neuron) sentence-pooled act(gate) on items aligned across ``languages``; cached."""
    require_gated(model)
    languages = check_languages(languages)
    entry = _entry(model, cache_root, NEURON_POOLED, {"languages": list(languages), "data": asdict(data)},
                   "-".join(languages))
    if entry.ready():
        return load_tensors(entry / "pooled.safetensors")
    items = parallel_items(languages, data)
    pooled = {code: pooled_gate_means(model, items[code], batch_size=data.batch_size, max_length=data.max_length,
                                      progress=progress, description=f"pool act(gate) [{code}]")
              for code in languages}
    save_tensors(pooled, entry.prepare() / "pooled.safetensors")
    atomic_write_json(entry / "pooled.json", {"languages": list(languages), "n_items": len(items[languages[0]]),
                                              "data": asdict(data), "model": model_metadata(model)})
    entry.commit()
    return pooled


def _data_provenance(stats: dict[str, ActivationStats]) -> dict[str, Any]:
    return {"data": {code: {"tokens": int(s.metadata.get("n_tokens", 0)), "rows": s.metadata.get("rows"),
                            "harvest_seconds": s.metadata.get("harvest_seconds")} for code, s in stats.items()}}


def identify(method: str, model: Any, config: NeuronRunConfig = NeuronRunConfig(), *,
             cache_root: str | Path | None = None, progress: bool = True) -> NeuronMask:
    """One method's mask for ``config.languages`` from the (cached) harvest or pooled pass."""
    if method not in METHODS:
        raise NeuronError(f"unknown neuron method {method!r}; known: {', '.join(METHODS)}")
    languages = config.languages
    provenance: dict[str, Any] = {"model": model_metadata(model), "activation_function": activation_name(model)}
    if method in ("lape", "ap90"):
        stats = language_statistics(model, languages, config.tokens, cache_root=cache_root, progress=progress)
        provenance.update(_data_provenance(stats), tokens=asdict(config.tokens))
        if method == "lape":
            return lape(stats, languages, config.lape, provenance)
        return activation_probability_90p(stats, languages, config.ap90, provenance)
    pooled = pooled_activations(model, languages, config.parallel, cache_root=cache_root, progress=progress)
    provenance["parallel"] = asdict(config.parallel)
    if method == "clas":
        return clas(pooled, languages, config.clas, provenance)
    return expertise(pooled, languages, config.expertise, provenance)


def cached_mask(method: str, model: Any, config: NeuronRunConfig = NeuronRunConfig(), *,
                cache_root: str | Path | None = None, progress: bool = True) -> NeuronMask:
    """:func:`identify`, with the mask itself cached (keyed by model, method config, data and languages)."""
    part = {"lape": config.lape, "ap90": config.ap90, "clas": config.clas, "expertise": config.expertise}[method]
    data = config.tokens if method in ("lape", "ap90") else config.parallel
    entry = _entry(model, cache_root, NEURON_MASKS, {"method": method, "config": asdict(part), "data": asdict(data),
                                                     "languages": list(config.languages)},
                   f"{method}-{'-'.join(config.languages)}")
    if entry.ready():
        return NeuronMask.load(entry.path)
    mask = identify(method, model, config, cache_root=cache_root, progress=progress)
    mask.save(entry.prepare())
    entry.commit()
    return mask


def cached_gate_values(model: Any, languages: Sequence[str], tokens: TokenDataConfig = TokenDataConfig(), *,
                       cache_root: str | Path | None = None, progress: bool = True) -> dict[str, Tensor]:
    """act(gate) mean / p90 / p10 / zero per (layer, neuron, language), from the cached harvest; cached."""
    languages = check_languages(languages)
    entry = _entry(model, cache_root, NEURON_GATES, {"languages": list(languages), "tokens": asdict(tokens)},
                   "-".join(languages))
    if entry.ready():
        return load_tensors(entry / "gates.safetensors")
    stats = language_statistics(model, languages, tokens, cache_root=cache_root, progress=progress)
    values = gate_statistics(stats, languages, range(model.cfg.n_layers), activation_name(model))
    save_tensors(values, entry.prepare() / "gates.safetensors")
    entry.commit()
    return values


# ------------------------------------------------------------------------------------------------- the run

def _write_figure(figure: Any, path: Path) -> str:
    atomic_write_text(path, figure.to_html(include_plotlyjs="cdn"))
    return path.name


def _matrix_dict(matrix: Tensor, rows: Sequence[str], columns: Sequence[str]) -> dict[str, dict[str, float]]:
    return {r: {c: round(float(matrix[i, j]), 4) for j, c in enumerate(columns)} for i, r in enumerate(rows)}


def run_neurons(method: str, out_dir: str | Path, config: NeuronRunConfig = NeuronRunConfig(), *, model: Any = None,
                cache_root: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Identify ``method``'s neurons for ``config.languages`` and write mask, summary and figures to ``out_dir``.

    LAPE runs also write the deactivation perplexity matrix (``ppl_delta.csv``, heatmaps, ``ppl_delta`` in the
    summary with its random control) and, with ``compare_methods``, the 90p and AP masks and their overlaps.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    model = model or load_model(backend="hf")
    mask = identify(method, model, config, cache_root=cache_root, progress=progress)
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
        values = cached_gate_values(model, languages, config.tokens, cache_root=cache_root, progress=progress)
        save_tensors(values, out_dir / "gate_values.safetensors")
    if method == "lape" and config.compare_methods:
        masks = {"lape": mask}
        for other in ("ap90", "expertise"):
            masks[other] = identify(other, model, config, cache_root=cache_root, progress=progress)
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
