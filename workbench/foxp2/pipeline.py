"""Neural FOXP2 end to end for one target language, stage by stage: stage II (spectra, window), stage I (SAEs and
English-promoting features at the window's layers), stage III (the shift's strength by the trust-region calibration
on dev), then FOXP2, its controls (at FOXP2's strength, and at the strengths matching its edit norm and its dev KL)
and the baselines on the eval split, with a report.

    result = run_foxp2(model, "hi", "figures/foxp2/hi")
    result.metrics["foxp2"]["lid_success"], result.strength, result.window

FOXP2 and its controls are the registered method :class:`workbench.foxp2.method.Foxp2Method` and its variants; this
module runs them on the same spine as every method (:func:`workbench.calibration.calibrate`,
:class:`workbench.evaluation.runs.EvaluationRuns`) and adds the stage-by-stage report. Every stage is a store entry
(stage II ``spectra``, stage I ``features``, one ``saes`` entry per site, each dev and eval evaluation a ``runs``
entry), so a re-run with the same inputs loads instead of recomputing, and an interrupted run loses only the
evaluation in progress. Each evaluation is also exported to ``out_dir/runs/``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from workbench.backends import Model
from workbench.calibration import SELECTIONS, calibrate, calibration_bounds, calibration_runs
from workbench.evaluation.evaluate import UtilityContexts
from workbench.evaluation.runs import EvaluationRuns
from workbench.foxp2.config import Foxp2Config, Foxp2Result
from workbench.foxp2.matching import match_controls
from workbench.foxp2.method import Foxp2Error, Foxp2Method
from workbench.foxp2.report import write_foxp2_report
from workbench.interventions import PositionRule
from workbench.languages import get_language
from workbench.methods import get_method
from workbench.models import model_metadata

console = Console(stderr=True)


def _brief(metrics: dict[str, Any]) -> str:
    return (f"LID {metrics['lid_success']:.2f}, relevance {metrics['relevance']:.2f}, dM {metrics['delta_mass']:+.2f}, "
            f"KL {metrics['kl']:.2f}, NLL {metrics['nll_delta']:+.2f}, leak {metrics['leakage_max']:.3f}")


def run_foxp2(model: Model, target: str, out_dir: str | Path, config: Foxp2Config = Foxp2Config(), *,
              progress: bool = True) -> Foxp2Result:
    """All three stages for ``target``, the trust region on dev, FOXP2 + controls + baselines on eval; writes
    ``report.md``, ``metrics.json``, ``results.csv``, ``trust_region.csv`` and the figures to ``out_dir``."""
    target = get_language(target).code
    source = get_language(config.source).code
    if target == source:
        raise Foxp2Error(f"the target language must differ from the source ({source!r})")
    for split in (config.dev_evaluation.utility_split, "eval"):  # before the stages' heavy work
        UtilityContexts.from_corpus(target, source, replace(config.evaluation, utility_split=split))
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()
        if progress:
            console.print(f"[bold]{target}[/bold]: {stage} done in {seconds[stage]:.0f} s")

    method = Foxp2Method(config=config.method_config(), progress=progress)
    spectral = method.spectral(model, target, source)
    lap("stage II (spectra, scores, windows)")
    rule = PositionRule.parse(config.rule)
    trust = config.trust_calibration()
    dev = calibration_runs(model, target, source, trust)
    dev.export_dir = out_dir / "runs"
    choices = method.dev_choices(model, target, source, dev, calibration_bounds(dev, trust), rule=rule,
                                 progress=progress)
    method = method.with_choices(choices)
    window = method.config.window or spectral.window
    lap("window, then beta with lambda, by J on dev (stage I at the window included)")
    variants = {"foxp2": method, **{name: method.variant_of(name) for name in config.controls}}
    prepared = {name: variant.prepare(model, target, source) for name, variant in variants.items()}
    lap("stage I (SAEs, features)")

    calibration = calibrate(model, method, target, source, rule=rule, config=trust, progress=progress, runs=dev)
    strength = calibration.strength
    switching = [row["strength"] for row in calibration.sweep
                 if config.switch_lid is not None and row["lid_success"] >= config.switch_lid]
    switch = min(switching) if switching and min(switching) > strength else None
    lap("stage III (trust region on dev)")

    runner = EvaluationRuns.from_split(model, target, source=source, split="eval", n_prompts=config.n_prompts,
                                       config=config.evaluation, export_dir=out_dir / "runs")
    metrics: dict[str, dict[str, Any]] = {}
    settings: dict[str, dict[str, Any]] = {}
    evaluated = [(name, variant, strength, rule) for name, variant in variants.items()]
    if switch is not None:
        evaluated.insert(1, ("foxp2@switch", method, switch, rule))
    for other in config.other_rules:
        other_rule = PositionRule.parse(other)
        setting = calibrate(model, method, target, source, rule=other_rule, config=trust, progress=progress, runs=dev)
        evaluated.append((f"foxp2@{other}", method, setting.strength, other_rule))
    matched = match_controls(model, method, config.controls, target, source, strength, rule,
                             matchings=config.matchings, config=config.match, split=trust.split, progress=progress)
    evaluated += [(f"{row.control}@{row.matched_on}", variants[row.control], row.strength, rule) for row in matched]
    lap("other position rules calibrated, controls matched (dev)")
    for name, variant, variant_strength, variant_rule in evaluated:
        metrics[name], _ = runner.run_method(variant, layer=None, strength=variant_strength, rule=variant_rule,
                                             name=f"eval-{name}-s{variant_strength:g}")
        settings[name] = {**prepared[variant.variant].plan.summary(), "strength": variant_strength,
                          "rule": str(variant_rule), "variant": variant.variant}
        if progress:
            console.print(f"  eval {target} {name}: {_brief(metrics[name])}")
    for name in config.baselines:
        baseline = get_method(name)
        setting = calibrate(model, baseline, target, source, rule=baseline.default_rule, config=config.calibration,
                            progress=progress)
        metrics[name], _ = runner.run_method(baseline, layer=setting.layer, strength=setting.strength,
                                             rule=baseline.default_rule, name=f"eval-{name}")
        settings[name] = {"layer": setting.layer, "strength": setting.strength, "rule": str(baseline.default_rule),
                          "description": metrics[name]["provenance"]["treatment"], "admissible": setting.admissible,
                          "selection": SELECTIONS[setting.strategy]}
        if progress:
            console.print(f"  eval {target} {name}: {_brief(metrics[name])}")
    lap("evaluation (eval split)")

    gate = prepared["foxp2"].gate
    result = Foxp2Result(target, window, strength, calibration.admissible, calibration.bounds,
                         calibration.sweep,
                         {name: {k: v for k, v in m.items() if k != "records"} for name, m in metrics.items()},
                         settings, spectral, prepared["foxp2"].localisation, gate.summary() if gate else None,
                         seconds, out_dir, choices.get("window_search", []), [asdict(row) for row in matched],
                         choices.get("beta_search", []))
    write_foxp2_report(result, config, model_metadata(model))
    return result
