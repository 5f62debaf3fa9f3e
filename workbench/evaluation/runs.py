"""Evaluate-or-load: every evaluated treatment is a :data:`workbench.store.RUNS` entry, shared by the benchmark,
calibration and FOXP2.

    runs = EvaluationRuns.from_split(model, "hi", split="eval", n_prompts=32, config=EvaluationConfig())
    metrics, seconds = runs.run_method(get_method("diffmean"), layer=4, strength=1.0, rule=ALL_POSITIONS)

A run's key is everything its result depends on: the model, the treatment's identity (the caller's: method,
fingerprint, layer, strength, rule ...), the prompts, their references, the languages and the evaluation settings
(whose utility contexts come from the prompts' split).
A re-run with the same key loads the stored metrics; an interrupted sweep loses only the evaluation in progress.
The unsteered baseline is computed once, on the first run that is not already stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from workbench import corpus
from workbench.artifacts import atomic_write_json
from workbench.backends import Model
from workbench.evaluation.evaluate import Baseline, EvaluationConfig, SteeringMetrics, compute_baseline, evaluate
from workbench.interventions import PositionRule, Steer, hooks_for
from workbench.methods import SteeringMethod, fingerprint_digest
from workbench.models import model_key
from workbench.prompting import qa_prompt
from workbench.store import RUNS, Store, digest

Prepared = tuple[Sequence[Steer], Any, dict[str, Any]]
"""A treatment ready to evaluate: its interventions, prompt rewriter (or None) and provenance."""


@dataclass
class EvaluationRuns:
    """Evaluates treatments on one prompt set (each result cached in the store, optionally exported)."""

    model: Model
    prompts: list[str]
    """Model-ready prompts (already in the QA template)."""
    target: str
    source: str
    config: EvaluationConfig
    label: str = ""
    """Readable part of each stored entry's name (e.g. the split)."""
    export_dir: Path | None = None
    """When set, each run's metrics (with per-prompt records) are also written to ``export_dir/<name>.json``."""
    baseline: Baseline | None = None
    """The unsteered runs; computed on the first run that is not already stored."""
    relevance_references: list[str | None] | None = None
    """Each prompt's English reference answer, which relevance also compares each answer with."""

    @classmethod
    def from_split(cls, model: Model, target: str, *, source: str = "en", split: str = "eval", n_prompts: int | None,
                   config: EvaluationConfig, export_dir: Path | None = None) -> EvaluationRuns:
        """The first ``n_prompts`` prompts of a corpus split (None: all), in the model's prompt format, with their
        English references; the utility contexts come from the same split (``config.utility_split`` is set to it)."""
        rows = corpus.prompts(split=split, n=n_prompts)
        return cls(model, [qa_prompt(model, p.prompt) for p in rows], target, source,
                   replace(config, utility_split=split), label=split, export_dir=export_dir,
                   relevance_references=[p.reference.get(source) for p in rows])

    def _key(self, identity: dict[str, Any]) -> dict[str, Any]:
        return {"model": model_key(self.model), "identity": identity, "prompts": digest(self.prompts),
                "relevance_references": digest(self.relevance_references),
                "target": self.target, "source": self.source,
                "evaluation": asdict(self.config)}

    def run(self, name: str, identity: dict[str, Any], interventions: Sequence[Steer] = (),
            prompt_rewriter: Any = None, provenance: dict[str, Any] | None = None) -> tuple[dict[str, Any], float]:
        """The metrics (JSON-ready, with per-prompt records) of one treatment, and the seconds its evaluation took."""
        return self._run(name, identity, lambda: (interventions, prompt_rewriter, provenance or {}))

    def _run(self, name: str, identity: dict[str, Any], prepare: Callable[[], Prepared]
             ) -> tuple[dict[str, Any], float]:
        """:meth:`run` with the treatment built by ``prepare`` only when the run is not stored yet (a stored run
        needs none of the treatment's data: directions, SAEs or neuron statistics)."""
        entry = Store().entry(RUNS, self._key(identity), scope=model_key(self.model),
                              label=f"{self.label}-{name}-{self.target}")
        if entry.ready():
            payload = SteeringMetrics.revive(json.loads((entry / "metrics.json").read_text(encoding="utf-8")))
        else:
            interventions, prompt_rewriter, provenance = prepare()
            if self.baseline is None:
                self.baseline = compute_baseline(self.model, self.prompts, self.target, source=self.source,
                                                 config=self.config)
            started = time.perf_counter()
            metrics = evaluate(self.model, self.prompts, self.target, source=self.source,
                               hooks=hooks_for(self.model, interventions), prompt_rewriter=prompt_rewriter,
                               baseline=self.baseline, config=self.config,
                               relevance_references=self.relevance_references)
            metrics.provenance.update({"run": name, "identity": identity, **provenance,
                                       "seconds": round(time.perf_counter() - started, 2)})
            path = metrics.save(entry.prepare() / "metrics.json")
            entry.commit()
            payload = SteeringMetrics.revive(json.loads(path.read_text(encoding="utf-8")))
        if self.export_dir is not None:
            atomic_write_json(self.export_dir / f"{name}.json", payload)
        return payload, float(payload["provenance"].get("seconds", float("nan")))

    def run_method(self, method: SteeringMethod, *, layer: int | None, strength: float, rule: PositionRule,
                   name: str | None = None) -> tuple[dict[str, Any], float]:
        """:meth:`run` for a registered method's treatment at one setting; its identity is the method's name and
        fingerprint with the setting, so a changed method never reuses a stored run."""
        identity = {"method": method.name, "fingerprint": fingerprint_digest(method), "layer": layer,
                    "strength": strength, "rule": str(rule)}
        def prepare() -> Prepared:
            treatment = method.treatment(self.model, self.target, self.source, layer=layer, strength=strength,
                                         rule=rule)
            return (treatment.interventions, treatment.prompt_rewriter,
                    {"treatment": treatment.description, **treatment.provenance})

        label = name or f"{self.label}-{method.name}-{'na' if layer is None else f'L{layer}'}-s{strength:g}-{rule}"
        return self._run(label.replace("+", "p"), identity, prepare)
