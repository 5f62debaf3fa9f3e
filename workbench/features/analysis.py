"""FOXP2 stage I and LangFIR on a set of per-site SAEs: language features, their neurons, their causal tests.

:func:`run_feature_analysis` (target language vs English):

1. encode parallel pairs (``discovery`` split) at every SAE site; selectivity per feature; natural activation
   (mean activation where the feature fires, over both languages' tokens);
2. the ``lift.n_candidates`` most selective features per side and site get the causal lift (prompt-final
   position, scales in units of the natural activation, the corpus' weak English prompts in ``Q: ...\\nA:`` form,
   token sets of :func:`workbench.evaluation.token_sets_for`); English-side candidates by default by the gap their
   ablation gains on those prompts instead (``lift.english``); joint scores; the top features per side are kept
   (across sites);
3. LangFIR: features firing on >= ``min_target_rate`` of target monolingual tokens, minus those firing on
   >= ``max_random_rate`` of random-token positions;
4. kept features traced to MLP neurons (a compact set per side), and the tracing of the top target features
   checked causally against random neurons;
5. single-feature ablation of the top features: per-language CE change (a heatmap).

Everything is returned in a :class:`FeatureReport`; :func:`write_report` writes ``features.json``
(``target``, ``features`` [{``site``, ``index``, ``selectivity``, ``lift``, ``ablation_lift``, ``score``,
``side``}], ``neurons`` [{``layer``, ``index``, ``weight``}], ...), CSV tables, the figures and the snippet dashboard.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from workbench import corpus
from workbench.activations import batch_texts
from workbench.backends import Model
from workbench.evaluation.token_sets import candidate_languages, token_sets_for
from workbench.features.ablation import AblationConfig, ablation_study, language_batches
from workbench.features.encode import (
    EncodedTexts,
    encode_texts,
    firing_rates,
    random_token_batches,
    top_snippets,
)
from workbench.features.lift import measure_ablation_lift, measure_lift
from workbench.features.scores import (
    FeatureError,
    joint_scores,
    langfir_mask,
    lift_slopes,
    natural_activation,
    selectivity,
    top_positive,
)
from workbench.features.tracing import compact_neuron_set, top_neurons, trace_features, verify_tracing
from workbench.languages import get_language
from workbench.models import model_metadata
from workbench.prompting import qa_prompt
from workbench.saes.io import check_sae_fits
from workbench.sites import Site

SIDES = ("target", "english")
ENGLISH_LIFTS = ("ablate", "add")
"""How English-side candidates' lift is measured (:attr:`LiftConfig.english`)."""


@dataclass(frozen=True)
class LiftConfig:
    """Causal lift measurement."""

    n_candidates: int = 32
    """Most selective features per side and site whose lift is measured."""
    scales: tuple[float, ...] = (1.0, 2.0, 4.0)
    """Scales ``a`` in units of the feature's natural activation."""
    n_prompts: int = 8
    """Weak English prompts (``Q: ...\\nA:``) the lift is averaged over."""
    prompt_split: str = "discovery"
    """Corpus split of the prompts."""
    english: str = "ablate"
    """How English-side candidates are scored: ``ablate`` (the gap gained by removing the feature's contribution on
    the prompts, what FOXP2's negative term does) or ``add`` (the first version: the slope of adding it, which
    saturates on English prompts)."""

    def __post_init__(self) -> None:
        if self.n_candidates < 1 or self.n_prompts < 1 or not self.scales or 0 in self.scales:
            raise FeatureError("lift needs n_candidates >= 1, n_prompts >= 1 and non-zero scales")
        if self.english not in ENGLISH_LIFTS:
            raise FeatureError(f"LiftConfig.english must be one of {', '.join(ENGLISH_LIFTS)}, got {self.english!r}")


@dataclass(frozen=True)
class LangFIRConfig:
    """LangFIR's random-token filter."""

    n_texts: int = 100
    """Target-language monolingual texts (``discovery`` split)."""
    n_random: int = 64
    """Random-token sequences."""
    random_length: int = 32
    """Tokens per random sequence (BOS first)."""
    min_target_rate: float = 0.1
    """A feature is target-active when it fires on at least this share of target tokens (on Gemma 3 270M's layer-6
    default SAE, 2048 latents, 0.2 leaves no survivor for hi, es or zh; 0.1 leaves 6, 3 and 2)."""
    max_random_rate: float = 0.02
    """... and it is filtered out when it fires on at least this share of random-token positions."""

    def __post_init__(self) -> None:
        if self.n_texts < 1 or self.n_random < 1 or self.random_length < 1:
            raise FeatureError("LangFIR needs n_texts, n_random and random_length >= 1")
        langfir_mask(torch.zeros(1), torch.zeros(1), min_target_rate=self.min_target_rate,
                     max_random_rate=self.max_random_rate)


@dataclass(frozen=True)
class TracingConfig:
    """Feature -> neuron tracing and its causal check."""

    n_texts: int = 48
    """Monolingual texts of the feature's language the contributions are aggregated over."""
    weighting: str = "activation"
    """``activation`` (weighted by the feature's activation) or ``uniform`` over tokens."""
    neurons_per_feature: int = 16
    """Top neurons per feature pooled into the language-neuron set."""
    max_neurons: int = 256
    """Size cap of the language-neuron set per side."""
    n_verify: int = 3
    """Top target features whose tracing is checked causally."""
    verify_neurons: int = 16
    """Traced neurons zeroed per checked feature (and as many random ones)."""
    n_random_draws: int = 3
    """Random neuron sets per checked feature."""

    def __post_init__(self) -> None:
        if self.weighting not in ("activation", "uniform"):
            raise FeatureError(f"weighting must be 'activation' or 'uniform', got {self.weighting!r}")
        if min(self.n_texts, self.neurons_per_feature, self.max_neurons, self.verify_neurons) < 1:
            raise FeatureError("tracing sizes must be >= 1")


@dataclass(frozen=True)
class FeatureAnalysisConfig:
    """FOXP2 stage I + LangFIR for one target language against English."""

    target: str = "hi"
    """Target language code."""
    n_pairs: int = 256
    """Parallel English/target pairs for selectivity and natural activations."""
    pair_split: str = "discovery"
    """Corpus split of the pairs (and of the LangFIR and tracing text)."""
    n_target_keep: int = 64
    """Target-promoting features kept (across sites), the revised reference's default."""
    n_english_keep: int = 32
    """English-promoting features kept."""
    n_snippets: int = 5
    """Top-activating snippets per reported feature."""
    n_ablation_features: int = 4
    """Top FOXP2 features (by score, target side first) in the ablation heatmap; 0 skips them."""
    n_ablation_langfir: int = 2
    """Top LangFIR survivors (by target firing rate) added to the ablation heatmap (LangFIR's causal test)."""
    max_length: int = 96
    """Tokens per text."""
    batch_size: int = 16
    """Texts per forward pass."""
    seed: int = 0
    """Seed of the random tokens and random neuron draws."""
    lift: LiftConfig = field(default_factory=LiftConfig)
    langfir: LangFIRConfig = field(default_factory=LangFIRConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)

    def __post_init__(self) -> None:
        target = get_language(self.target).code
        if target == "en":
            raise FeatureError("the target language must not be English (features are scored against English)")
        if self.n_pairs < 2 or self.n_target_keep < 0 or self.n_english_keep < 0:
            raise FeatureError("need n_pairs >= 2 and non-negative keep counts")
        languages = tuple(dict.fromkeys([target, "en", *self.ablation.languages]))
        object.__setattr__(self, "ablation", AblationConfig(**{**asdict(self.ablation), "languages": languages}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FeatureReport:
    """The results of :func:`run_feature_analysis` (JSON-ready via :meth:`to_dict`)."""

    target: str
    features: list[dict[str, Any]]
    """Kept features (both sides), best first per side."""
    candidates: list[dict[str, Any]]
    """Every feature whose lift was measured."""
    neurons: list[dict[str, Any]]
    """The target-side language-neuron set."""
    english_neurons: list[dict[str, Any]]
    """The English-side neuron set."""
    langfir: list[dict[str, Any]]
    """LangFIR survivors."""
    tracing_checks: list[dict[str, Any]]
    """Causal checks of the tracing."""
    ablation: list[dict[str, Any]]
    """Per-feature, per-language CE changes."""
    site_counts: list[dict[str, Any]]
    """Per site: kept target / English features and LangFIR survivors."""
    snippets: dict[str, list[dict[str, Any]]]
    """``"site/index"`` -> top-activating snippets."""
    config: dict[str, Any]
    provenance: dict[str, Any]
    firing_rates_en: dict[str, list[float]] = field(default_factory=dict)
    """Site -> every latent's firing rate on the English side of the pairs (what random controls are matched on)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(config: FeatureAnalysisConfig) -> tuple[list[str], list[str]]:
    rows = corpus.parallel(["en", config.target], split=config.pair_split, n=config.n_pairs)
    return [row.text[config.target] for row in rows], [row.text["en"] for row in rows]


def _token_masks(model: Model, target: str) -> torch.Tensor:
    sets = token_sets_for(model.tokenizer, candidate_languages(target, "en"))
    return torch.stack([sets.mask(target), sets.mask("en")])


def _prompts(model: Model, config: FeatureAnalysisConfig) -> list[str]:
    return [qa_prompt(model, p.prompt) for p in corpus.prompts(config.lift.prompt_split,
                                                                      n=config.lift.n_prompts)]


def _score_site(model: Model, name: str, sae: Any, encoded: EncodedTexts, config: FeatureAnalysisConfig,
                masks: torch.Tensor, prompts: list[str], progress: bool) -> list[dict[str, Any]]:
    """Selectivity for every feature, lift for the candidates; one record per candidate."""
    target_rows, english_rows = encoded.rows(config.target), encoded.rows("en")
    pooled = encoded.pooled[name]
    sel = selectivity(pooled[target_rows], pooled[english_rows])
    natural = natural_activation(encoded.active_sum[name].sum(0), encoded.fire_count[name].sum(0))
    usable = torch.isfinite(natural)
    target_side = top_positive(torch.where(usable, sel, torch.zeros_like(sel)), config.lift.n_candidates)
    english_side = top_positive(torch.where(usable, -sel, torch.zeros_like(sel)), config.lift.n_candidates)
    candidates = torch.cat([target_side, english_side]).tolist()
    if not candidates:
        return []
    delta, _ = measure_lift(model, sae, candidates, natural[candidates], prompts, masks, config.lift.scales,
                            progress=progress)
    slopes = lift_slopes(delta, torch.tensor(config.lift.scales))
    target_score, english_score = joint_scores(sel[candidates], slopes)
    removal = torch.full((len(candidates),), float("nan"))
    if config.lift.english == "ablate" and len(english_side):
        english_rows = slice(len(target_side), len(candidates))
        removal[english_rows], _ = measure_ablation_lift(model, sae, english_side.tolist(), prompts, masks,
                                                         progress=progress)
        english_score[english_rows] = (-sel[english_side]).clamp_min(0) * removal[english_rows].clamp_min(0)
    rate_target = encoded.firing_rate(name, config.target)
    rate_english = encoded.firing_rate(name, "en")
    site = Site.parse(name)
    records = []
    for i, index in enumerate(candidates):
        side = "target" if target_score[i] > 0 else "english" if english_score[i] > 0 else None
        records.append({
            "site": name, "layer": site.layer, "kind": site.kind, "index": int(index),
            "selectivity": float(sel[index]), "lift": float(slopes[i]), "ablation_lift": float(removal[i]),
            "score": float(max(target_score[i], english_score[i])), "side": side,
            "natural_activation": float(natural[index]), "firing_rate_target": float(rate_target[index]),
            "firing_rate_en": float(rate_english[index]),
            "delta_mass": dict(zip([str(a) for a in config.lift.scales], delta[i].tolist(), strict=True)),
        })
    return records


def _keep(candidates: list[dict[str, Any]], side: str, n: int) -> list[dict[str, Any]]:
    rows = [c for c in candidates if c["side"] == side]
    return sorted(rows, key=lambda c: -c["score"])[:n]


def _monolingual_batches(model: Model, lang: str, config: FeatureAnalysisConfig, n: int) -> list[Any]:
    texts = [row.text for row in corpus.monolingual(lang, split=config.pair_split, n=n)]
    return batch_texts(model.tokenizer, {lang: texts}, batch_size=config.batch_size, max_length=config.max_length)


def run_feature_analysis(model: Model, saes: dict[str, Any], config: FeatureAnalysisConfig | None = None, *,
                         progress: bool = True) -> FeatureReport:
    """FOXP2 stage I and LangFIR for ``config.target`` on every SAE (hook name -> SAELens SAE)."""
    config = config or FeatureAnalysisConfig()
    if not saes:
        raise FeatureError("no SAEs to analyse")
    for sae in saes.values():
        check_sae_fits(sae, model)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    target_texts, english_texts = _pairs(config)
    encoded = encode_texts(model, saes, {config.target: target_texts, "en": english_texts},
                           batch_size=config.batch_size, max_length=config.max_length, progress=progress,
                           description="encode pairs")
    timings["encode_pairs"], clock = time.perf_counter() - clock, time.perf_counter()

    masks, prompts = _token_masks(model, config.target), _prompts(model, config)
    candidates = [record for name, sae in saes.items()
                  for record in _score_site(model, name, sae, encoded, config, masks, prompts, progress)]
    kept = _keep(candidates, "target", config.n_target_keep) + _keep(candidates, "english", config.n_english_keep)
    timings["lift"], clock = time.perf_counter() - clock, time.perf_counter()

    target_batches = _monolingual_batches(model, config.target, config, config.langfir.n_texts)
    target_rates = firing_rates(model, saes, target_batches, progress=progress, description="LangFIR target")
    random_rates = firing_rates(model, saes, random_token_batches(
        model.tokenizer, config.langfir.n_random, config.langfir.random_length, seed=config.seed,
        batch_size=config.batch_size), progress=progress, description="LangFIR random")
    langfir = []
    for name in saes:
        survivors = langfir_mask(target_rates[name], random_rates[name], min_target_rate=config.langfir.min_target_rate,
                                 max_random_rate=config.langfir.max_random_rate)
        english_rate = encoded.firing_rate(name, "en")
        for index in torch.nonzero(survivors).flatten().tolist():
            langfir.append({"site": name, "index": int(index), "target_rate": float(target_rates[name][index]),
                            "random_rate": float(random_rates[name][index]),
                            "en_rate": float(english_rate[index])})
    langfir.sort(key=lambda r: -r["target_rate"])
    timings["langfir"], clock = time.perf_counter() - clock, time.perf_counter()

    neuron_sets: dict[str, list[dict[str, Any]]] = {}
    checks: list[dict[str, Any]] = []
    for side, lang in (("target", config.target), ("english", "en")):
        side_features = [f for f in kept if f["side"] == side]
        if not side_features:
            neuron_sets[side] = []
            continue
        batches = _monolingual_batches(model, lang, config, config.tracing.n_texts)
        tracings = []
        for name in dict.fromkeys(f["site"] for f in side_features):
            indices = [f["index"] for f in side_features if f["site"] == name]
            tracing = trace_features(model, saes[name], indices, batches, weighting=config.tracing.weighting,
                                     progress=progress)
            decoder_route = tracing.method == "decoder"
            tracings.append((tracing.contributions.abs() if decoder_route else tracing.contributions, tracing.layers))
            if side == "target":
                ranked = [f for f in kept if f["side"] == "target"][:config.tracing.n_verify]
                for feature in [f for f in ranked if f["site"] == name]:
                    row = tracing.features.index(feature["index"])
                    neurons = top_neurons(tracing.contributions[row], tracing.layers, config.tracing.verify_neurons,
                                          by_magnitude=decoder_route)
                    if neurons:
                        check = verify_tracing(model, saes[name], feature["index"], neurons, batches,
                                               n_random=config.tracing.n_random_draws, seed=config.seed)
                        checks.append({"site": name, **check, "neurons": [list(n) for n in neurons]})
        neuron_sets[side] = compact_neuron_set(tracings, per_feature=config.tracing.neurons_per_feature,
                                               max_neurons=config.tracing.max_neurons)
    timings["tracing"], clock = time.perf_counter() - clock, time.perf_counter()

    ablation_rows: list[dict[str, Any]] = []
    chosen = [{**f, "group": f"foxp2-{f['side']}"} for f in _keep(candidates, "target", config.n_ablation_features)]
    chosen += [{**f, "group": "foxp2-english"}
               for f in _keep(candidates, "english", config.n_ablation_features - len(chosen))]
    seen = {(f["site"], f["index"]) for f in chosen}
    chosen += [{**r, "group": "langfir"} for r in langfir[:config.n_ablation_langfir]
               if (r["site"], r["index"]) not in seen]
    if chosen:
        batches = language_batches(model.tokenizer, config.ablation)
        clean = None
        for name in dict.fromkeys(f["site"] for f in chosen):
            rows = [f for f in chosen if f["site"] == name]
            study = ablation_study(model, saes[name], [f["index"] for f in rows], config.ablation, batches=batches,
                                   ce_clean=clean, progress=progress)
            clean, result = study.ce_clean, study.to_dict()
            for feature, row in zip(rows, result["features"], strict=True):
                ablation_rows.append({"site": name, "group": feature["group"], **row, "ce_clean": result["ce_clean"]})
    timings["ablation"] = time.perf_counter() - clock

    reported = {(f["site"], f["index"]) for f in kept} | {(r["site"], r["index"]) for r in langfir}
    snippets = {f"{site}/{index}": [asdict(s) for s in top_snippets(encoded, site, index, model.tokenizer,
                                                                    k=config.n_snippets)]
                for site, index in sorted(reported)}
    counts = [{"site": name, "layer": Site.parse(name).layer, "kind": Site.parse(name).kind,
               "target": sum(1 for f in kept if f["site"] == name and f["side"] == "target"),
               "english": sum(1 for f in kept if f["site"] == name and f["side"] == "english"),
               "langfir": sum(1 for r in langfir if r["site"] == name)} for name in saes]
    provenance = {"model": model_metadata(model), "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
                  "n_pairs": len(target_texts), "prompts": prompts,
                  "pair_tokens": {g: int(c) for g, c in zip(encoded.groups, encoded.token_count.tolist(),
                                                             strict=True)},
                  "sae_sites": list(saes)}
    return FeatureReport(config.target, kept, candidates, neuron_sets.get("target", []),
                         neuron_sets.get("english", []), langfir, checks, ablation_rows, counts, snippets,
                         config.to_dict(), provenance,
                         {name: encoded.firing_rate(name, "en").tolist() for name in saes})


def report_tables(report: FeatureReport) -> dict[str, pd.DataFrame]:
    """``candidates``, ``features``, ``neurons``, ``langfir`` and ``ablation`` as data frames."""
    ablation = pd.DataFrame([{"site": r["site"], "index": r["index"], "language": lang, "delta_ce": value}
                             for r in report.ablation for lang, value in r["delta_ce"].items()])
    candidates = pd.DataFrame([{k: v for k, v in c.items() if k != "delta_mass"} for c in report.candidates])
    return {"candidates": candidates, "features": pd.DataFrame(report.features).drop(columns="delta_mass",
                                                                                      errors="ignore"),
            "neurons": pd.DataFrame([{**n, "side": "target"} for n in report.neurons]
                                    + [{**n, "side": "english"} for n in report.english_neurons]),
            "langfir": pd.DataFrame(report.langfir), "ablation": ablation}


def write_report(report: FeatureReport, out_dir: str | Path) -> Path:
    """Write ``features.json``, the CSV tables, the three figures and the snippet dashboard into ``out_dir``."""
    from workbench.artifacts import atomic_write_json, atomic_write_text
    from workbench.features.plots import ablation_heatmap, dashboard_html, layer_counts_figure, selectivity_lift_figure
    from workbench.saes.metrics import json_safe

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "features.json", json_safe(report.to_dict()))
    for name, frame in report_tables(report).items():
        atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False))
    atomic_write_text(out_dir / "selectivity_lift.html",
                      selectivity_lift_figure(report).to_html(include_plotlyjs="cdn"))
    atomic_write_text(out_dir / "layer_counts.html", layer_counts_figure(report).to_html(include_plotlyjs="cdn"))
    if report.ablation:
        atomic_write_text(out_dir / "ablation_heatmap.html",
                          ablation_heatmap(report.ablation).to_html(include_plotlyjs="cdn"))
    atomic_write_text(out_dir / "dashboard.html", dashboard_html(report))
    return out_dir
