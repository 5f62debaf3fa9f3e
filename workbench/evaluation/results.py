"""One result schema for every report: a typed row per evaluated setting (:class:`ResultRow`), written as
``results.csv``, ``metrics.json`` and ``leaderboard.md`` the same way by the benchmark, FOXP2 and the demo.

    rows = [ResultRow.from_metrics(metrics, method="diffmean", layer=4, strength=1.0, rule="all",
                                   selection="trust region on dev")]
    write_results(rows, metrics, out_dir, title="Steering leaderboard", intro="...", extra={"model": ...})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.artifacts import atomic_write_json, atomic_write_text
from workbench.languages import get_language

INTERVAL_METRICS: tuple[str, ...] = ("steering_score", "lid_success", "lid_success_first_tokens", "relevance",
                                     "coherence", "default_rate", "delta_mass", "kl", "nll_delta")
"""Metrics reported with a 95% interval (``<metric>_ci_low`` / ``<metric>_ci_high``)."""


@dataclass(frozen=True)
class ResultRow:
    """One evaluated setting of one method (or FOXP2 variant) on one target language: one line of ``results.csv``."""

    method: str
    """Registered method name, or the FOXP2 report's variant name (``foxp2``, ``random-support``...)."""
    target: str
    source: str
    layer: int | None
    """Edited layer (None: layer-free methods, FOXP2's own window)."""
    strength: float
    rule: str
    """Position rule."""
    selection: str
    """How the setting was chosen: ``trust region on dev``, ``best dev score within bounds``, ``fixed``, ``sweep``,
    ``at FOXP2's strength``..."""
    within_bounds: bool | None
    """Whether the chosen setting met every calibration bound (None: nothing was calibrated)."""
    n_prompts: int
    n_utility_contexts: int
    """Target-language question/answer contexts the KL and NLL change rest on."""
    steering_score: float
    steering_score_ci_low: float
    steering_score_ci_high: float
    lid_success: float
    lid_success_ci_low: float
    lid_success_ci_high: float
    lid_success_first_tokens: float
    lid_success_first_tokens_ci_low: float
    lid_success_first_tokens_ci_high: float
    relevance: float
    relevance_ci_low: float
    relevance_ci_high: float
    coherence: float
    coherence_ci_low: float
    coherence_ci_high: float
    repeated_ngram_share: float
    distinct_2: float
    output_nll: float
    default_rate: float
    default_rate_ci_low: float
    default_rate_ci_high: float
    delta_mass: float
    delta_mass_ci_low: float
    delta_mass_ci_high: float
    leakage_max: float
    leakage_mean: float
    kl: float
    kl_ci_low: float
    kl_ci_high: float
    nll_delta: float
    nll_delta_ci_low: float
    nll_delta_ci_high: float
    en_ppl_delta: float
    retrieval_relevance: float
    relevance_chance: float
    lid_success_v1: float
    steering_score_v1: float
    """The first steering score (whole-output LID without relatives, retrieval relevance), kept for comparison."""
    seconds: float
    """Seconds the evaluation took when it ran (a stored run keeps its original time)."""

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], *, method: str, layer: int | None, strength: float, rule: str,
                     selection: str, within_bounds: bool | None = None) -> ResultRow:
        """A row from one evaluation's metrics (``SteeringMetrics.to_dict()`` or a stored run)."""
        values: dict[str, Any] = {key: metrics[key] for key in (
            "target", "source", "n_prompts", "n_utility_contexts", "steering_score", "lid_success",
            "lid_success_first_tokens", "relevance",
            "coherence", "repeated_ngram_share", "distinct_2", "output_nll", "default_rate", "delta_mass",
            "leakage_max", "leakage_mean", "kl", "nll_delta", "en_ppl_delta", "retrieval_relevance",
            "relevance_chance", "lid_success_v1", "steering_score_v1")}
        for key in INTERVAL_METRICS:
            values[f"{key}_ci_low"], values[f"{key}_ci_high"] = metrics[f"{key}_ci"]
        seconds = float(metrics.get("provenance", {}).get("seconds", math.nan))
        return cls(method=method, layer=layer, strength=strength, rule=rule, selection=selection,
                   within_bounds=within_bounds, seconds=seconds, **values)

    def interval(self, key: str) -> str:
        """``value [low, high]`` (2 decimals)."""
        return f"{getattr(self, key):.2f} [{getattr(self, f'{key}_ci_low'):.2f}, {getattr(self, f'{key}_ci_high'):.2f}]"

    def setting(self) -> str:
        """The setting in a few characters: ``L4 ×1``, ``λ 0.2``, or ``—`` for fixed methods."""
        if self.selection == "fixed":
            return "—"
        where = "" if self.layer is None else f"L{self.layer} "
        text = f"{where}×{self.strength:g}" if self.layer is not None else f"×{self.strength:g}"
        return text + (" (bound not met)" if self.within_bounds is False else "")


COLUMNS: tuple[str, ...] = tuple(field.name for field in fields(ResultRow))
"""The columns of every ``results.csv``, in order."""


def results_table(rows: Sequence[ResultRow]) -> pd.DataFrame:
    """The tidy table of ``rows`` (the columns of :data:`COLUMNS`)."""
    return pd.DataFrame([asdict(row) for row in rows], columns=list(COLUMNS)).astype({"layer": "Int64"})


def leaderboard_markdown(rows: Sequence[ResultRow], *, title: str, intro: str) -> str:
    """Per target, the rows ranked by steering score with 95% intervals (sweep rows left out)."""
    lines = [f"# {title}", "", intro, ""]
    reported = [row for row in rows if row.selection != "sweep"]
    for target in dict.fromkeys(row.target for row in reported):
        ranked = sorted((row for row in reported if row.target == target), key=lambda row: -row.steering_score)
        lines += [f"## {get_language(target).name} ({target})", "",
                  "| method | setting | selection | score | LID | LID 8 tok | relevance | coherent | DEFAULT | dM "
                  "| leak max | KL | NLL Δ | en ppl Δ | score v1 | n prompts / contexts |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in ranked:
            lines.append(
                f"| {row.method} | {row.setting()} | {row.selection} | {row.interval('steering_score')} "
                f"| {row.interval('lid_success')} | {row.lid_success_first_tokens:.2f} | {row.interval('relevance')} "
                f"| {row.interval('coherence')} | {row.interval('default_rate')} | {row.interval('delta_mass')} "
                f"| {row.leakage_max:.3f} | {row.interval('kl')} | {row.interval('nll_delta')} "
                f"| {row.en_ppl_delta:.3g} | {row.steering_score_v1:.2f} "
                f"| {row.n_prompts} / {row.n_utility_contexts} |")
        lines.append("")
    return "\n".join(lines)


def write_results(rows: Sequence[ResultRow], metrics: Mapping[str, Mapping[str, Any]], out_dir: str | Path, *,
                  title: str, intro: str, extra: Mapping[str, Any], leaderboard_name: str = "leaderboard.md"
                  ) -> pd.DataFrame:
    """``results.csv`` (the rows), ``metrics.json`` (``extra`` plus target -> method -> metrics with intervals) and
    the leaderboard (``leaderboard_name``); returns the table."""
    out_dir = Path(out_dir)
    table = results_table(rows)
    atomic_write_text(out_dir / "results.csv", table.to_csv(index=False))
    atomic_write_json(out_dir / "metrics.json", {**extra, "metrics": metrics})
    atomic_write_text(out_dir / leaderboard_name, leaderboard_markdown(rows, title=title, intro=intro))
    return table
