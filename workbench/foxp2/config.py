"""What a FOXP2 run depends on (:class:`Foxp2Config`) and what it measured (:class:`Foxp2Result`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.calibration import CalibrationConfig
from workbench.evaluation import EvaluationConfig
from workbench.foxp2.beta import BetaSearchConfig
from workbench.foxp2.matching import MATCHINGS, MatchConfig
from workbench.foxp2.method import VARIANTS, Foxp2Error, Foxp2MethodConfig
from workbench.foxp2.pairs import PairDataConfig
from workbench.foxp2.sae_features import Localisation, LocaliseConfig
from workbench.foxp2.spectra import SpectralReport
from workbench.foxp2.trust import TrustRegionConfig
from workbench.foxp2.window import WindowSearchConfig
from workbench.interventions import PositionRule
from workbench.spectral import SpectralConfig

CONTROLS: tuple[str, ...] = VARIANTS[1:]
"""FOXP2's controls (registered as ``foxp2-<control>``), each run at FOXP2's strength."""
BASELINES: tuple[str, ...] = ("none", "prompt-en", "prompt-native", "diffmean")
"""Registered steering methods evaluated beside it (DiffMean calibrated on dev by the same trust region as in the
benchmark)."""


@dataclass(frozen=True)
class Foxp2Config:
    """Everything a FOXP2 run depends on besides the model and the target language."""

    source: str = "en"
    """The language steered away from (the prompts' language)."""
    pairs: PairDataConfig = field(default_factory=PairDataConfig)
    """Stage II: the parallel pairs and their representation."""
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    """Stage II: ranks, bootstrap, window width bounds."""
    localise: LocaliseConfig = field(default_factory=LocaliseConfig)
    """Stage I: the SAEs and the feature analysis at the window's layers."""
    trust: TrustRegionConfig = field(default_factory=TrustRegionConfig)
    """Stage III: the strengths tried on dev and the bounds."""
    rule: str = "all"
    """Positions the shift edits: ``all``, or ``final+8`` (the prompt-final position and 8 decoding steps)."""
    other_rules: tuple[str, ...] = ("final+8",)
    """Position rules FOXP2 is also calibrated (strength on dev, the window and beta of ``rule`` kept) and evaluated
    under, reported as ``foxp2@<rule>`` (the paper's default ``final+8`` beside ``all``)."""
    beta: float = 1.0
    """Weight of the English-feature suppression (when ``beta_search`` is None)."""
    units: str = "residual-norm"
    """Strength units (``residual-norm``: each layer's median residual norm, strength / |W|; ``raw``: the
    paper-literal multiple of ``v_tgt``)."""
    window: tuple[int, int] | None = None
    """A fixed (first, last) window (None: chosen on dev by ``window_search``)."""
    window_search: WindowSearchConfig | None = field(default_factory=WindowSearchConfig)
    """The candidates tried on dev and the strength they are tried at (None: stage II's own window, the
    paper-literal choice with ``spectral.window_score="mass-x-stability"``)."""
    beta_search: BetaSearchConfig | None = field(default_factory=BetaSearchConfig)
    """The ``beta`` values tried on dev jointly with the strength (None: ``beta`` as set)."""
    gate: bool = False
    """Fit the instruction gate and run FOXP2 behind it."""
    controls: tuple[str, ...] = CONTROLS
    """Controls evaluated at FOXP2's strength."""
    matchings: tuple[str, ...] = MATCHINGS
    """Each control is also evaluated at the strength matching FOXP2's mean edit norm (``edit-norm``) and its dev
    KL (``kl``) at FOXP2's strength (:mod:`.matching`; empty: only at FOXP2's strength)."""
    match: MatchConfig = field(default_factory=MatchConfig)
    """How the matched strengths are searched on dev."""
    baselines: tuple[str, ...] = BASELINES
    """Registered methods evaluated beside FOXP2."""
    n_dev_prompts: int = 48
    """Dev-split prompts per trust-region evaluation."""
    dev_evaluation: EvaluationConfig = field(default_factory=lambda: EvaluationConfig(
        max_new_tokens=20, n_utility_contexts=64, utility_split="dev"))
    """Evaluation settings on dev (trust region)."""
    n_prompts: int | None = None
    """Eval-split prompts per evaluation (None: every prompt of the split, 74)."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Evaluation settings on eval."""
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    """How the DiffMean baseline's layer and strength are chosen on dev."""
    switch_lid: float | None = 0.5
    """Also evaluate FOXP2 (as ``foxp2@switch``) at the smallest dev strength whose LID success reaches this, when
    the trust region's strength is smaller: what the shift does once it switches the language, at its cost
    (None: skip)."""
    seed: int = 0
    """Seed of the random-support control."""

    def __post_init__(self) -> None:
        for rule in (self.rule, *self.other_rules):
            PositionRule.parse(rule)
        if self.rule in self.other_rules:
            raise Foxp2Error(f"other_rules repeats the main rule {self.rule!r}")
        if set(self.matchings) - set(MATCHINGS):
            raise Foxp2Error(f"unknown matching(s) {sorted(set(self.matchings) - set(MATCHINGS))}; known: "
                             f"{', '.join(MATCHINGS)}")
        unknown = set(self.controls) - set(CONTROLS)
        if unknown:
            raise Foxp2Error(f"unknown control(s) {sorted(unknown)}; known: {', '.join(CONTROLS)}")
        if (self.n_prompts is not None and self.n_prompts < 2) or self.n_dev_prompts < 2:
            raise Foxp2Error("need at least 2 eval and 2 dev prompts")
        dev = self.dev_evaluation
        if dev != EvaluationConfig(max_new_tokens=dev.max_new_tokens, n_utility_contexts=dev.n_utility_contexts,
                                   utility_split=dev.utility_split):
            raise Foxp2Error("dev_evaluation may set only max_new_tokens, n_utility_contexts and utility_split (the "
                             "trust region's calibration evaluates with these and the defaults otherwise)")

    def method_config(self) -> Foxp2MethodConfig:
        """What the FOXP2 method (and its controls) are built with."""
        return Foxp2MethodConfig(pairs=self.pairs, spectral=self.spectral, localise=self.localise, beta=self.beta,
                                 gate=self.gate, seed=self.seed, strengths=self.trust.strengths, units=self.units,
                                 window=self.window, window_search=self.window_search,
                                 beta_search=self.beta_search)

    def trust_calibration(self) -> CalibrationConfig:
        """Stage III as a calibration: the trust-region strategy over ``trust.strengths`` on the dev prompts."""
        trust, dev = self.trust, self.dev_evaluation
        return CalibrationConfig(strategy="trust-region", n_prompts=self.n_dev_prompts,
                                 max_new_tokens=dev.max_new_tokens, n_utility_contexts=dev.n_utility_contexts,
                                 split=dev.utility_split, strengths=trust.strengths, max_leakage=trust.max_leakage,
                                 max_kl=trust.max_kl, max_nll_delta=trust.max_nll_delta,
                                 bounds_from=trust.bounds_from)


@dataclass
class Foxp2Result:
    """What a FOXP2 run measured (also written to ``out_dir``)."""

    target: str
    window: tuple[int, int]
    strength: float
    """The trust region's ``lambda``."""
    within_bounds: bool
    """Whether that strength met every bound on dev (False: no strength did; the smallest is used)."""
    bounds: dict[str, float]
    sweep: list[dict[str, Any]]
    """Dev rows of the trust-region sweep."""
    metrics: dict[str, dict[str, Any]]
    """Variant (foxp2, control or baseline) -> its eval metrics with CIs."""
    plans: dict[str, dict[str, Any]]
    spectral: SpectralReport
    localisation: Localisation
    gate: dict[str, Any] | None
    seconds: dict[str, float]
    out_dir: Path
    window_search: list[dict[str, Any]] = field(default_factory=list)
    """One row per candidate window tried on dev (origin, dev costs, J); empty when the window was fixed."""
    matched: list[dict[str, Any]] = field(default_factory=list)
    """One row per (control, matching): the matched strength and the measure at it vs FOXP2's
    (:class:`.matching.MatchedStrength`)."""
    beta_search: list[dict[str, Any]] = field(default_factory=list)
    """One row per (beta, lambda) tried on dev (:mod:`.beta`); empty when beta was fixed."""
