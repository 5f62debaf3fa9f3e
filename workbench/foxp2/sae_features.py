"""FOXP2 stage I for the pipeline: SAEs at the window's residual sites, the language features there (selectivity x
causal lift, traced to neurons) and stage II in SAE-feature space (the same rows, encoded), all cached.

SAEs are language-independent and shared with the other SAE methods (:func:`workbench.saes.cache.residual_saes`). The
feature analysis of a target at a window is one :data:`workbench.store.FEATURES` entry.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch

from workbench.artifacts import atomic_write_json
from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.features.analysis import (
    FeatureAnalysisConfig,
    FeatureReport,
    LiftConfig,
    TracingConfig,
    run_feature_analysis,
)
from workbench.foxp2.pairs import PairDataConfig, pair_representations
from workbench.foxp2.spectra import layer_record
from workbench.models import model_key
from workbench.saes.cache import residual_saes
from workbench.saes.config import SAETrainConfig
from workbench.saes.io import load_sae_dir, sae_weights_digests
from workbench.saes.metrics import json_safe
from workbench.sites import Site
from workbench.spectral import SpectralConfig
from workbench.store import FEATURES, Store

STAGE_I_SAES = SAETrainConfig(expansion_factor=4.0, n_tokens=2**20, training_samples=2**20, qa_share=0.25)
"""Stage I's self-trained SAEs: 4x the site's width (2,560 latents on Gemma 3 270M), TopK k 32, one epoch over
~1M distinct discovery tokens of nine languages (a quarter of each language's share in the Q/A format of the steered
prompts; Hindi and Arabic, short of text, give all they have and the others share the rest). Eight window layers'
buffer (19 GiB) goes to memory-mapped files on disk; each SAE trains on its site's 2.4 GiB read back into memory."""


@dataclass(frozen=True)
class LocaliseConfig:
    """Stage I settings: the SAEs and the feature analysis."""

    sae: SAETrainConfig = field(default_factory=lambda: STAGE_I_SAES)
    """How the per-layer residual SAEs are trained (cached per layer and config; :data:`STAGE_I_SAES`)."""
    sae_dir: str | None = None
    """Use these SAEs instead of training them: a directory of SAELens SAE folders or of released Gemma Scope 2
    folders (:func:`workbench.saes.load_sae`) with one ``resid_post`` SAE per window layer."""
    n_target_keep: int = 64
    """Target-promoting features kept across the window's sites."""
    n_english_keep: int = 32
    """English-promoting features kept across the window's sites (the shift's ``N_en``)."""
    n_pairs: int = 256
    """Parallel discovery pairs for selectivity and the feature-space spectra."""
    n_lift_candidates: int = 32
    """Most selective features per side and site whose causal lift is measured."""
    verify_tracing: int = 1
    """Top target features whose neuron tracing is checked causally against random neurons."""

    def analysis(self, target: str) -> FeatureAnalysisConfig:
        """The feature-analysis settings for ``target`` (the single-feature ablation study is left out)."""
        return FeatureAnalysisConfig(target=target, n_pairs=self.n_pairs, n_target_keep=self.n_target_keep,
                                     n_english_keep=self.n_english_keep, n_ablation_features=0,
                                     n_ablation_langfir=0, tracing=TracingConfig(n_verify=self.verify_tracing),
                                     lift=LiftConfig(n_candidates=self.n_lift_candidates))


def feature_spectra(model: Model, saes: dict[str, Any], target: str, source: str = "en",
                    pairs: PairDataConfig = PairDataConfig(), config: SpectralConfig = SpectralConfig(), *,
                    use_cache: bool = True, progress: bool = True) -> pd.DataFrame:
    """Stage II in SAE-feature space at each SAE's site: stage II's rows (``pairs``: the first response positions
    of shared questions by default) encoded by the site's SAE, with the same scores and null models as in residual
    space (:func:`workbench.foxp2.spectra.layer_record`; one row per site)."""
    if any(Site.parse(name).kind != pairs.kind for name in saes):
        raise WorkbenchError(f"feature spectra need SAEs at {pairs.kind} sites, got {', '.join(saes)}")
    rows = pair_representations(model, target, source, pairs, use_cache=use_cache, progress=progress)
    generator = torch.Generator().manual_seed(config.seed)
    records = []
    for name, sae in saes.items():
        layer = Site.parse(name).layer
        with torch.inference_mode():
            latents = {code: sae.encode(rows[code][layer].to(sae.dtype)).float() for code in (source, target)}
        record, _, _ = layer_record(latents[target], latents[source], config, generator)
        records.append({"site": name, "layer": layer, **record})
    return pd.DataFrame(records)


@dataclass
class Localisation:
    """Stage I at a set of layers: the SAEs, the kept features (both sides), the feature-space spectra."""

    target: str
    layers: list[int]
    saes: dict[str, Any]
    """Hook name -> SAE."""
    report: FeatureReport
    feature_spectra: pd.DataFrame
    seconds: dict[str, float]

    def english_features(self, hook_name: str) -> tuple[int, ...]:
        """``N_en`` at one site: its kept English-promoting features, best first."""
        return tuple(f["index"] for f in self.report.features if f["site"] == hook_name and f["side"] == "english")

    def summary(self) -> dict[str, Any]:
        return {"layers": self.layers, "sites": list(self.saes), "seconds": self.seconds,
                "kept": self.report.site_counts, "tracing_checks": self.report.tracing_checks,
                "n_target_neurons": len(self.report.neurons), "n_english_neurons": len(self.report.english_neurons),
                "feature_spectra": self.feature_spectra.to_dict(orient="records")}


def localise(model: Model, target: str, layers: list[int], config: LocaliseConfig = LocaliseConfig(), *,
             pairs: PairDataConfig = PairDataConfig(), use_cache: bool = True, progress: bool = True) -> Localisation:
    """Stage I for ``target`` at ``layers`` (SAEs and the analysis cached; a re-run loads them); the feature-space
    spectra read stage II's ``pairs``."""
    started = time.perf_counter()
    if config.sae_dir is None:
        saes = residual_saes(model, layers, config.sae, progress=progress)
        sae_identity = config.sae.to_dict()
    else:
        sites = [f"{layer}.resid_post" for layer in layers]
        saes = load_sae_dir(config.sae_dir, model, sites=sites)
        sae_identity = {"weights": sae_weights_digests(config.sae_dir, sites)}
    sae_seconds = time.perf_counter() - started
    analysis = config.analysis(target)
    entry = Store().entry(FEATURES, {"model": model_key(model), "target": target, "layers": layers,
                                     "analysis": analysis.to_dict(), "sae": sae_identity,
                                     "feature_spectra_rows": asdict(pairs)},
                          scope=model_key(model), label=f"{target}-L{'_'.join(map(str, layers))}")
    if use_cache and entry.ready():
        payload = json.loads((entry / "stage1.json").read_text())
        return Localisation(target, layers, saes, FeatureReport(**payload["report"]),
                            pd.DataFrame(payload["feature_spectra"]), payload["seconds"])
    clock = time.perf_counter()
    report = run_feature_analysis(model, saes, analysis, progress=progress)
    analysis_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    spectra = feature_spectra(model, saes, target, pairs=pairs, use_cache=use_cache, progress=progress)
    seconds = {"saes": round(sae_seconds, 1), "features": round(analysis_seconds, 1),
               "feature_spectra": round(time.perf_counter() - clock, 1)}
    atomic_write_json(entry.prepare() / "stage1.json", json_safe({
        "report": asdict(report), "feature_spectra": spectra.to_dict(orient="records"), "seconds": seconds}))
    entry.commit()
    return Localisation(target, layers, saes, report, spectra, seconds)
