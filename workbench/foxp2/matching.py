"""Controls at FOXP2's cost: the strength at which a control's edit is as large, or costs as much, as FOXP2's at its
trust-region strength.

A control run at FOXP2's ``lambda`` can be weaker or stronger than FOXP2 itself (a random direction of the same norm
barely moves the next-token distribution; the negative term alone is a fraction of the whole edit), so a difference
in outcome may only be a difference in dose. Two matchings, each measured on dev:

* ``edit-norm``: the mean ``|delta h|`` (:func:`workbench.interventions.mean_edit_norm`) on the dev prompts equals
  FOXP2's; the edit is linear in the strength up to the negative term's dependence on ``h``, so a rescale and one
  correction converge;
* ``kl``: the mean KL(base || edited) on the dev utility contexts (the trust region's KL) equals FOXP2's; found by
  bracketing and bisection in log strength.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

from rich.console import Console

from workbench import corpus
from workbench.artifacts import atomic_write_json
from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.evaluation.utility import answer_costs
from workbench.foxp2.method import Foxp2Method
from workbench.interventions import PositionRule, Steer, hooks_for, mean_edit_norm
from workbench.methods import fingerprint_digest
from workbench.models import model_key
from workbench.prompting import qa_context, qa_prompt
from workbench.store import MATCHED_STRENGTHS, Store

console = Console(stderr=True)

MATCHINGS: tuple[str, ...] = ("edit-norm", "kl")
"""What a control's strength can be matched on."""
UTILITY_ANSWER_TOKENS = 32
"""Answer tokens of each utility context (the evaluation's default)."""
UTILITY_BATCH = 16
"""Contexts per forward pass of the KL measurement."""


class MatchingError(WorkbenchError):
    """A matching that cannot be done (unknown kind, a control that changes nothing)."""


@dataclass(frozen=True)
class MatchConfig:
    """How a control's strength is matched to FOXP2's on dev."""

    n_prompts: int = 32
    """Dev prompts ``|delta h|`` is averaged over."""
    n_contexts: int = 32
    """Dev utility contexts the KL is measured on."""
    kl_tolerance: float = 0.1
    """Relative KL difference at which the search stops."""
    max_steps: int = 10
    """Most KL measurements per control."""

    def __post_init__(self) -> None:
        if min(self.n_prompts, self.n_contexts, self.max_steps) < 1 or self.kl_tolerance <= 0:
            raise MatchingError("MatchConfig needs n_prompts, n_contexts, max_steps >= 1 and kl_tolerance > 0")


@dataclass(frozen=True)
class MatchedStrength:
    """A control's strength matched to FOXP2's on one measure."""

    control: str
    matched_on: str
    """One of :data:`MATCHINGS`."""
    strength: float
    """The control's matched strength."""
    reference: float
    """FOXP2's value of the measure at its own strength."""
    value: float
    """The control's value at ``strength``."""
    steps: int
    """Measurements the search took."""


def rescale_to(measure: Callable[[float], float], reference: float, start: float, corrections: int = 1
               ) -> tuple[float, float, int]:
    """The strength whose ``measure`` equals ``reference`` for a measure proportional to strength (up to a small
    non-linearity): rescale ``start`` by ``reference / measure``, then correct ``corrections`` times.
    Returns (strength, its measure, measurements)."""
    strength, value = start, measure(start)
    for _ in range(corrections + 1):
        if value <= 0 or not math.isfinite(value):
            raise MatchingError(f"the edit measures {value} at strength {strength:g}: nothing to rescale")
        strength = strength * reference / value
        value = measure(strength)
    return strength, value, corrections + 2


def search_to(measure: Callable[[float], float], reference: float, start: float, *, tolerance: float = 0.1,
              max_steps: int = 10) -> tuple[float, float, int]:
    """The strength whose ``measure`` (increasing in strength) is within ``tolerance`` (relative) of ``reference``:
    doubling or halving from ``start`` until bracketed, then bisection in log strength. When the budget runs out,
    the closest strength measured. Returns (strength, its measure, measurements)."""
    if reference <= 0:
        raise MatchingError(f"cannot match a reference of {reference}")
    tried: dict[float, float] = {}

    def at(strength: float) -> float:
        tried[strength] = measure(strength)
        return tried[strength]

    def close(value: float) -> bool:
        return abs(value - reference) <= tolerance * reference

    low = high = None
    strength = start
    while len(tried) < max_steps:
        value = at(strength)
        if close(value):
            return strength, value, len(tried)
        if value < reference:
            low = strength
        else:
            high = strength
        if low is not None and high is not None:
            strength = math.sqrt(low * high)
        else:
            strength = strength * 2 if high is None else strength / 2
    best = min(tried, key=lambda s: abs(tried[s] - reference))
    return best, tried[best], len(tried)


def match_controls(model: Model, method: Foxp2Method, controls: Sequence[str], target: str, source: str,
                   strength: float, rule: PositionRule, *, matchings: Sequence[str] = MATCHINGS,
                   config: MatchConfig = MatchConfig(), split: str = "dev", use_cache: bool = True,
                   progress: bool = True) -> list[MatchedStrength]:
    """Each control's strength matched to ``method`` (FOXP2) at ``strength`` on each of ``matchings``, measured on
    the ``split`` prompts and utility contexts (cached in the store). A control that cannot be matched (its edit is
    zero, or FOXP2's KL is) is left out with a warning."""
    unknown = set(matchings) - set(MATCHINGS)
    if unknown:
        raise MatchingError(f"unknown matching(s) {sorted(unknown)}; known: {', '.join(MATCHINGS)}")
    entry = Store().entry(MATCHED_STRENGTHS, {
        "model": model_key(model), "method": fingerprint_digest(method), "controls": list(controls),
        "target": target, "source": source, "strength": strength, "rule": str(rule), "matchings": list(matchings),
        "config": asdict(config), "split": split}, scope=model_key(model), label=f"{target}-s{strength:g}")
    if use_cache and entry.ready():
        rows = json.loads((entry / "matched.json").read_text(encoding="utf-8"))
        return [MatchedStrength(**row) for row in rows]
    prompts = [qa_prompt(model, p.prompt) for p in corpus.prompts(split=split, n=config.n_prompts)]
    pairs = corpus.qa_pairs(target, split=split)[:config.n_contexts]
    contexts, answers = (list(column) for column in
                         zip(*(qa_context(model, pair.question, pair.answer) for pair in pairs), strict=True))
    costs = partial(answer_costs, model, contexts, answers, max_answer_tokens=UTILITY_ANSWER_TOKENS,
                    batch_size=UTILITY_BATCH)
    reference_log_probs = costs(keep_log_probs=True).log_probs

    def interventions(variant: Foxp2Method, value: float) -> Sequence[Steer]:
        return variant.treatment(model, target, source, layer=None, strength=value, rule=rule).interventions

    def edit_norm(variant: Foxp2Method, value: float) -> float:
        return mean_edit_norm(model, interventions(variant, value), prompts)

    def kl(variant: Foxp2Method, value: float) -> float:
        result = costs(hooks=hooks_for(model, interventions(variant, value)), reference_prompts=contexts,
                       reference_log_probs=reference_log_probs)
        return float(result.kl.mean())

    measures = {"edit-norm": edit_norm, "kl": kl}
    matched = []
    for matched_on in matchings:
        measure = measures[matched_on]
        reference = measure(method, strength)
        for control in controls:
            variant = method.variant_of(control)
            search = (partial(rescale_to, corrections=1) if matched_on == "edit-norm" else
                      partial(search_to, tolerance=config.kl_tolerance, max_steps=config.max_steps))
            try:
                value, achieved, steps = search(partial(measure, variant), reference, strength)
            except MatchingError as error:  # e.g. a negative-only control with no English features: no edit
                console.print(f"[yellow]  {control} not matched on {matched_on}: {error}[/yellow]")
                continue
            matched.append(MatchedStrength(control, matched_on, value, reference, achieved, steps))
            if progress:
                console.print(f"  {control} matched on {matched_on}: x{value:.3g} ({achieved:.3g} vs FOXP2 "
                              f"{reference:.3g}, {steps} measurements)")
    atomic_write_json(entry.prepare() / "matched.json", [asdict(row) for row in matched])
    entry.commit()
    return matched
