"""The neuron methods' data, harvested once and cached: per-language ``mlp_pre`` statistics, sentence-pooled
act(gate), masks and act(gate) values — what the identification methods and the neuron steering methods read.

Each is a store entry (:mod:`workbench.store`; ``cache_root`` overrides the store's root for one call):

* ``neuron-harvests``: one per language, its ``mlp_pre`` statistics with histograms (one harvest per language serves
  LAPE, 90p and the act(gate) values; any language set reuses them);
* ``neuron-pooled``: sentence-pooled act(gate) on parallel items (CLAS, AP), per language set;
* ``neuron-masks`` and ``neuron-gates``: identified masks and act(gate) statistics, for the steering methods.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from workbench.activations import ActivationStats, HarvestConfig, harvest
from workbench.artifacts import atomic_write_json, load_tensors, save_tensors
from workbench.backends import Model
from workbench.models import model_key, model_metadata
from workbench.neurons.actprob import ActProbConfig, activation_probability_90p
from workbench.neurons.causal import CausalConfig
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
from workbench.sites import Site, sites_for
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


def _entry(model: Model, cache_root: str | Path | None, kind: Kind, key: dict[str, Any], label: str) -> Entry:
    return Store(cache_root).entry(kind, {"model": model_key(model), **key}, scope=model_key(model), label=label)


def _harvest_config(tokens: TokenDataConfig) -> HarvestConfig:
    return HarvestConfig(histogram_kinds=("mlp_pre",), histogram_bins=tokens.histogram_bins,
                         histogram_max_abs=tokens.histogram_max_abs)


def language_statistics(model: Model, languages: Sequence[str], tokens: TokenDataConfig = TokenDataConfig(), *,
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


def harvested_statistics(model: Model, languages: Sequence[str], harvest: str | Path
                         ) -> dict[str, ActivationStats]:
    """Per-language ``mlp_pre`` statistics read from a saved harvest (``workbench harvest --sites mlp_pre --kinds
    mlp_pre``, on one process or under torchrun) instead of harvested here: its one :class:`ActivationStats`, whose
    groups are languages, serves every language."""
    require_gated(model)
    languages = check_languages(languages)
    stats = ActivationStats.load(harvest)
    shape = {key: stats.metadata.get("model", {}).get(key) for key in ("n_layers", "d_model", "d_mlp")}
    if shape != {"n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model, "d_mlp": model.cfg.d_mlp}:
        raise NeuronError(f"the harvest in {harvest} is of a model with {shape}, not of this one "
                          f"({model.cfg.n_layers} layers, d_model {model.cfg.d_model}, d_mlp {model.cfg.d_mlp})")
    harvested, loaded = stats.metadata.get("model", {}).get("tl_name"), model_metadata(model).get("tl_name")
    if harvested and loaded and harvested != loaded:
        raise NeuronError(f"the harvest in {harvest} is of {harvested}, not of this model ({loaded}); the same shape "
                          "does not make it the same weights (e.g. a base and an instruct model)")
    missing_layers = sorted(set(range(model.cfg.n_layers)) - {s.layer for s in stats.sites if s.kind == "mlp_pre"})
    if missing_layers or "mlp_pre" not in stats.config.histogram_kinds:
        raise NeuronError(f"the harvest in {harvest} lacks mlp_pre at layers {missing_layers} or its histograms "
                          f"(kinds: {stats.config.histogram_kinds}); harvest with --sites mlp_pre --kinds mlp_pre")
    missing = [code for code in languages if code not in stats.groups]
    if missing:
        raise NeuronError(f"the harvest in {harvest} has no {', '.join(missing)} (it holds {', '.join(stats.groups)}); "
                          f"harvest them too (--langs {','.join(languages)}) or compare fewer languages")
    return {code: stats for code in languages}


def pooled_activations(model: Model, languages: Sequence[str], data: ParallelDataConfig = ParallelDataConfig(), *,
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


def _harvest_provenance(stats: dict[str, ActivationStats], harvest: str | Path) -> dict[str, Any]:
    shared = next(iter(stats.values()))
    site = Site(0, "mlp_pre")
    return {"harvest": str(harvest), "data": {code: {"tokens": shared.count(site, code),
                                                     "rows": shared.metadata.get("texts", {}).get(code)}
                                              for code in stats},
            "tokens": {key: shared.metadata.get(key) for key in ("split", "n_tokens_per_language", "max_length",
                                                                  "world_size", "harvest_seconds")}}


def identify(method: str, model: Model, config: NeuronRunConfig = NeuronRunConfig(), *,
             cache_root: str | Path | None = None, progress: bool = True, harvest: str | Path | None = None
             ) -> NeuronMask:
    """One method's mask for ``config.languages`` from the (cached) harvest or pooled pass; LAPE and 90p read a
    saved harvest (:func:`harvested_statistics`) instead when ``harvest`` names one (``config.tokens`` unused)."""
    if method not in METHODS:
        raise NeuronError(f"unknown neuron method {method!r}; known: {', '.join(METHODS)}")
    languages = config.languages
    provenance: dict[str, Any] = {"model": model_metadata(model), "activation_function": activation_name(model)}
    if method in ("lape", "ap90"):
        if harvest is None:
            stats = language_statistics(model, languages, config.tokens, cache_root=cache_root, progress=progress)
            provenance.update(_data_provenance(stats), tokens=asdict(config.tokens))
        else:
            stats = harvested_statistics(model, languages, harvest)
            provenance.update(_harvest_provenance(stats, harvest))
        if method == "lape":
            return lape(stats, languages, config.lape, provenance)
        return activation_probability_90p(stats, languages, config.ap90, provenance)
    pooled = pooled_activations(model, languages, config.parallel, cache_root=cache_root, progress=progress)
    provenance["parallel"] = asdict(config.parallel)
    if method == "clas":
        return clas(pooled, languages, config.clas, provenance)
    return expertise(pooled, languages, config.expertise, provenance)


def cached_mask(method: str, model: Model, config: NeuronRunConfig = NeuronRunConfig(), *,
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


def cached_gate_values(model: Model, languages: Sequence[str], tokens: TokenDataConfig = TokenDataConfig(), *,
                       cache_root: str | Path | None = None, progress: bool = True, harvest: str | Path | None = None
                       ) -> dict[str, Tensor]:
    """act(gate) mean / p90 / p10 / zero per (layer, neuron, language), from the cached harvest; cached. With
    ``harvest``, computed from that saved harvest instead (not cached: reading it is as cheap)."""
    languages = check_languages(languages)
    if harvest is not None:
        return gate_statistics(harvested_statistics(model, languages, harvest), languages,
                               range(model.cfg.n_layers), activation_name(model))
    entry = _entry(model, cache_root, NEURON_GATES, {"languages": list(languages), "tokens": asdict(tokens)},
                   "-".join(languages))
    if entry.ready():
        return load_tensors(entry / "gates.safetensors")
    stats = language_statistics(model, languages, tokens, cache_root=cache_root, progress=progress)
    values = gate_statistics(stats, languages, range(model.cfg.n_layers), activation_name(model))
    save_tensors(values, entry.prepare() / "gates.safetensors")
    entry.commit()
    return values
