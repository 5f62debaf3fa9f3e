"""Neural FOXP2 end to end for one target language: stage II (spectra, window), stage I (SAEs and English-promoting
features at the window's layers), stage III (the signed sparse shift, its strength from the trust region on dev),
then FOXP2, its controls and the baselines on the eval split.

    result = run_foxp2(model, "hi", "figures/foxp2/hi")
    result.metrics["foxp2"]["lid_success"], result.strength, result.window

Every stage is a store entry (stage II ``spectra``, stage I ``features``, one ``saes`` entry per site, each dev and
eval evaluation a ``runs`` entry keyed by everything it depends on; see :mod:`workbench.store`), so a re-run with the
same inputs loads instead of recomputing, and an interrupted run loses only the evaluation in progress. Each
evaluation is also exported to ``out_dir/runs/<split>-<variant>.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from workbench.activations import token_activations
from workbench.calibration import calibrate
from workbench.evaluation.runs import EvaluationRuns
from workbench.foxp2.config import Foxp2Config, Foxp2Error, Foxp2Result
from workbench.foxp2.gate import GateReport, fit_gate, gated
from workbench.foxp2.report import write_foxp2_report
from workbench.foxp2.sae_features import Localisation, localise
from workbench.foxp2.shift import LayerShift, ShiftPlan, negative_only, positive_only, random_support, vector_plan
from workbench.foxp2.spectra import SpectralReport, spectral_stage
from workbench.foxp2.trust import bounds, choose_strength
from workbench.interventions import PositionRule
from workbench.languages import get_language
from workbench.methods import fingerprint_digest, get_method
from workbench.models import model_metadata
from workbench.sites import Site, resolve_site

console = Console(stderr=True)

def shifted_window(window: tuple[int, int], n_layers: int) -> tuple[int, int]:
    """A window of the same width outside the chosen one: right after it if it fits, else right before it."""
    first, last = window
    width = last - first + 1
    if last + width < n_layers:
        return last + 1, last + width
    if first - width >= 0:
        return first - width, first - 1
    raise Foxp2Error(f"no room for a window of width {width} outside layers {first}-{last} of {n_layers}")


def foxp2_plan(model: Any, spectral: SpectralReport, localisation: Localisation, layers: list[int], *,
               beta: float = 1.0, name: str = "foxp2") -> ShiftPlan:
    """The signed sparse shift at ``layers``: ``v_tgt`` from stage II, ``N_en`` from stage I's SAEs there (BOS,
    which the SAEs never saw, is left unedited)."""
    hooks = [resolve_site(model, Site(layer, "resid_post")).hook_name for layer in layers]
    bos_id = model.tokenizer.bos_token_id
    bos = token_activations(model, [bos_id], hooks) if bos_id is not None else {}
    parts = []
    for layer, hook in zip(layers, hooks, strict=True):
        parts.append(LayerShift(layer, hook, spectral.target_vector(layer), localisation.saes[hook],
                                localisation.english_features(hook), bos.get(hook)))
    return ShiftPlan(name, tuple(parts), beta, description=f"v_tgt (rank-r projection of the pooled mean difference) "
                     f"minus beta={beta:g} x English-promoting SAE features, layers {layers[0]}-{layers[-1]}")


def _brief(metrics: dict[str, Any]) -> str:
    return (f"LID {metrics['lid_success']:.2f}, relevance {metrics['relevance']:.2f}, dM {metrics['delta_mass']:+.2f}, "
            f"KL {metrics['kl']:.2f}, NLL {metrics['nll_delta']:+.2f}, leak {metrics['leakage_max']:.3f}")


def run_foxp2(model: Any, target: str, out_dir: str | Path, config: Foxp2Config = Foxp2Config(), *,
              progress: bool = True) -> Foxp2Result:
    """All three stages for ``target``, the trust region on dev, FOXP2 + controls + baselines on eval; writes
    ``report.md``, ``metrics.json``, ``results.csv``, ``trust_region.csv`` and the figures to ``out_dir``."""

    target = get_language(target).code
    get_language(config.source)
    if target == config.source:
        raise Foxp2Error(f"the target language must differ from the source ({config.source!r})")
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()
        if progress:
            console.print(f"[bold]{target}[/bold]: {stage} done in {seconds[stage]:.0f} s")

    spectral = spectral_stage(model, target, config.source, config.pairs, config.spectral, progress=progress)
    layers = list(range(spectral.window[0], spectral.window[1] + 1))
    lap("stage II (spectra, window)")
    moved = shifted_window(spectral.window, model.cfg.n_layers) if "shifted-window" in config.controls else None
    localisation = localise(model, target, layers, config.localise, progress=progress)
    moved_localisation = (localise(model, target, list(range(moved[0], moved[1] + 1)), config.localise,
                                   progress=progress) if moved else None)
    lap("stage I (SAEs, features)")

    plan = foxp2_plan(model, spectral, localisation, layers, beta=config.beta)
    plans = {"positive-only": positive_only(plan), "negative-only": negative_only(plan),
             "random-support": random_support(plan, config.seed)}
    if moved_localisation is not None:
        plans["shifted-window"] = foxp2_plan(model, spectral, moved_localisation, moved_localisation.layers,
                                             beta=config.beta, name="shifted-window")
    if "diffmean-window" in config.controls:
        diffmean = get_method("diffmean").directions(model, target, config.source)
        plans["diffmean-window"] = vector_plan(
            "diffmean-window", {layer: diffmean.vector(layer) for layer in layers}, diffmean.site,
            f"the token-level DiffMean vectors (natural scale) at layers {layers[0]}-{layers[-1]}")
    plans = {"foxp2": plan, **{name: plans[name] for name in config.controls}}
    rule = PositionRule.parse(config.rule)
    gate_report: GateReport | None = fit_gate(model) if config.gate else None
    probe = gate_report.probe if gate_report else None

    def identity(variant: ShiftPlan, strength: float) -> dict[str, Any]:
        return {"plan": variant.summary(), "spectral": spectral.config.get("spectral"),
                "pairs": asdict(config.pairs), "sae": config.localise.sae.to_dict(), "strength": strength,
                "rule": str(rule),
                "gate": gate_report.summary() if gate_report and variant.name == "foxp2" else None}

    def shift_run(runner: EvaluationRuns, variant: ShiftPlan, strength: float) -> dict[str, Any]:
        steers = variant.interventions(strength, rule)
        return runner.run(f"{runner.label}-{variant.name}-s{strength:g}", identity(variant, strength),
                          gated(steers, probe) if variant.name == "foxp2" else steers)[0]

    def method_run(runner: EvaluationRuns, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        method = get_method(name)
        method_rule = method.default_rule
        setting = calibrate(model, method, target, config.source, rule=method_rule, config=config.calibration,
                            progress=progress)
        treatment = method.treatment(model, target, config.source, layer=setting.layer, strength=setting.strength,
                                     rule=method_rule)
        metrics, _ = runner.run(f"{runner.label}-{name}", {
            "method": name, "fingerprint": fingerprint_digest(method), "layer": setting.layer,
            "strength": setting.strength, "rule": str(method_rule), "treatment": treatment.description},
            treatment.interventions, treatment.prompt_rewriter)
        return metrics, {"layer": setting.layer, "strength": setting.strength, "rule": str(method_rule),
                         "description": treatment.description, "admissible": setting.admissible}

    dev = EvaluationRuns.from_split(model, target, source=config.source, split=config.dev_evaluation.utility_split,
                                    n_prompts=config.n_dev_prompts, config=config.dev_evaluation,
                                    export_dir=out_dir / "runs")
    prompting_cost, _ = dev.run(f"{dev.label}-prompt-en", {"method": "prompt-en"},
                                prompt_rewriter=get_method("prompt-en").treatment(
                                    model, target, config.source, layer=None, strength=1.0, rule=rule).prompt_rewriter)
    limits = bounds(config.trust, prompting_cost)
    sweep = []
    for strength in config.trust.strengths:
        metrics = shift_run(dev, plan, strength)
        sweep.append({"strength": strength, **{k: metrics[k] for k in (
            "lid_success", "relevance", "steering_score", "default_rate", "delta_mass", "leakage_max", "kl",
            "nll_delta")}})
        if progress:
            console.print(f"  trust region {target} x{strength:g}: {_brief(metrics)}")
    chosen, inside = choose_strength(sweep, limits)
    strength = chosen["strength"]
    switching = [row["strength"] for row in sweep
                 if config.switch_lid is not None and row["lid_success"] >= config.switch_lid]
    switch = min(switching) if switching and min(switching) > strength else None
    lap("stage III (trust region on dev)")

    runner = EvaluationRuns.from_split(model, target, source=config.source, split="eval", n_prompts=config.n_prompts,
                                       config=config.evaluation, export_dir=out_dir / "runs")
    metrics: dict[str, dict[str, Any]] = {}
    settings: dict[str, dict[str, Any]] = {}
    runs = [(name, variant, strength) for name, variant in plans.items()]
    if switch is not None:
        runs.insert(1, ("foxp2@switch", plan, switch))
    for name, variant, variant_strength in runs:
        metrics[name] = shift_run(runner, variant, variant_strength)
        settings[name] = {**variant.summary(), "strength": variant_strength, "rule": str(rule)}
        if progress:
            console.print(f"  eval {target} {name}: {_brief(metrics[name])}")
    for name in config.baselines:
        metrics[name], settings[name] = method_run(runner, name)
        if progress:
            console.print(f"  eval {target} {name}: {_brief(metrics[name])}")
    lap("evaluation (eval split)")

    result = Foxp2Result(target, spectral.window, strength, inside, limits, sweep,
                         {name: {k: v for k, v in m.items() if k != "records"} for name, m in metrics.items()},
                         settings, spectral, localisation, gate_report.summary() if gate_report else None, seconds,
                         out_dir)
    write_foxp2_report(result, config, model_metadata(model))
    return result
