"""Neural FOXP2 as a registered steering method, with its controls as registered variants.

    method = get_method("foxp2")                     # or "foxp2-positive-only", "foxp2-random-support", ...
    treatment = method.treatment(model, "hi", "en", layer=None, strength=0.2, rule=ALL_POSITIONS)

On first use for a (model, target, source) the method prepares its stages through the store: stage II (spectra,
scores and windows, :func:`.spectra.spectral_stage`) and stage I at the window (SAEs and the English-promoting
features, :func:`.sae_features.localise`), then builds its :class:`.shift.ShiftPlan`. Its treatment is the plan's
interventions at the given strength (``lambda``, in the config's ``units``). Calibration first asks the method for
its dev choices (:meth:`Foxp2Method.dev_choices`: the window by J among stage II's windows and a coarse grid,
:mod:`.window`; then ``beta`` jointly with the strength, :mod:`.beta`), then searches strengths by the trust-region
strategy at that ``beta`` (:mod:`workbench.calibration`).

Variants (METHODS section 3's controls): ``positive-only`` (no English-feature suppression), ``negative-only`` (no
target vector), ``random-support`` (a random direction of the same norm and as many random latents, matched on English
firing rate),
``shifted-window`` (the same construction at a window of the same width outside the chosen one, with its own SAEs)
and ``diffmean-window`` (the token-level DiffMean vectors at the window's layers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.foxp2.beta import BetaSearchConfig, search_beta
from workbench.foxp2.gate import GateReport, fit_gate, gated
from workbench.foxp2.pairs import PairDataConfig
from workbench.foxp2.sae_features import Localisation, LocaliseConfig, localise
from workbench.foxp2.shift import LayerShift, ShiftPlan, negative_only, positive_only, random_support, vector_plan
from workbench.foxp2.spectra import SpectralReport, spectral_stage
from workbench.foxp2.trust import TrustRegionConfig
from workbench.foxp2.window import WindowSearchConfig, search_window
from workbench.interventions import ALL_POSITIONS, PositionRule
from workbench.methods import Treatment, get_method
from workbench.readouts import token_activations
from workbench.sites import Site, resolve_site
from workbench.spectral import SpectralConfig

UNITS: tuple[str, ...] = ("residual-norm", "raw")
"""Strength units: ``residual-norm`` (``v_tgt`` rescaled to each layer's median residual norm, the strength divided
by the window width) or ``raw`` (the paper-literal ``v_tgt`` at its own norm, one strength for every layer)."""
VARIANTS: tuple[str, ...] = ("foxp2", "positive-only", "negative-only", "random-support", "shifted-window",
                             "diffmean-window")
"""FOXP2 itself and its controls."""


class Foxp2Error(WorkbenchError):
    """A FOXP2 configuration that cannot run (unknown variant or control, English as target, no room for a shifted
    window)."""


@dataclass(frozen=True)
class Foxp2MethodConfig:
    """Everything the FOXP2 treatment depends on besides the model, the languages and the strength."""

    pairs: PairDataConfig = field(default_factory=PairDataConfig)
    """Stage II: the parallel pairs and their representation."""
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    """Stage II: ranks, bootstrap, window width bounds."""
    localise: LocaliseConfig = field(default_factory=LocaliseConfig)
    """Stage I: the SAEs and the feature analysis at the window's layers."""
    beta: float = 1.0
    """Weight of the English-feature suppression."""
    gate: bool = False
    """Run FOXP2 behind the instruction gate (the controls are never gated)."""
    seed: int = 0
    """Seed of the random-support control."""
    strengths: tuple[float, ...] = TrustRegionConfig().strengths
    """Strengths calibration may pick (``lambda``, in ``units``)."""
    units: str = "residual-norm"
    """What one unit of strength is (one of :data:`UNITS`)."""
    window: tuple[int, int] | None = None
    """(first, last) layer of the shift; None: chosen on dev by ``window_search`` when calibrated, else stage II's
    own window (``spectral.window_score``)."""
    window_search: WindowSearchConfig | None = field(default_factory=WindowSearchConfig)
    """How calibration chooses the window on dev by J (None: stage II's window, the paper-literal choice)."""
    beta_search: BetaSearchConfig | None = field(default_factory=BetaSearchConfig)
    """How calibration chooses ``beta`` on dev jointly with the strength (:mod:`.beta`; None: ``beta`` as set)."""

    def __post_init__(self) -> None:
        if self.units not in UNITS:
            raise Foxp2Error(f"unknown strength units {self.units!r}; use one of {', '.join(UNITS)}")
        if self.window is not None and not 0 <= self.window[0] <= self.window[1]:
            raise Foxp2Error(f"a window is (first, last) with 0 <= first <= last, got {self.window}")


_WITHOUT_STAGE_I: tuple[str, ...] = ("positive-only", "diffmean-window")
"""Variants whose shift reads neither stage I's SAEs and features nor ``beta``."""


def shifted_window(window: tuple[int, int], n_layers: int) -> tuple[int, int]:
    """A window of the same width outside the chosen one: right after it if it fits, else right before it. A window
    wider than the room on either side (the literal mass x stability run can span most layers) gets every layer of
    the roomier side instead: a narrower control, which its plan's layer list shows (under per-layer units, λ / |W|
    then gives each of its layers more strength than FOXP2's)."""
    first, last = window
    width = last - first + 1
    if last + width < n_layers:
        return last + 1, last + width
    if first - width >= 0:
        return first - width, first - 1
    after, before = n_layers - 1 - last, first
    if not after and not before:
        raise Foxp2Error(f"the window {first}-{last} covers all {n_layers} layers: no room for the shifted-window "
                         "control")
    return (last + 1, n_layers - 1) if after >= before else (0, first - 1)


def foxp2_plan(model: Model, spectral: SpectralReport, localisation: Localisation | None, layers: list[int], *,
               beta: float = 1.0, name: str = "foxp2", units: str = "residual-norm") -> ShiftPlan:
    """The signed sparse shift at ``layers``: ``v_tgt`` from stage II (in ``units``), ``N_en`` from stage I's SAEs
    there (None: no negative term); BOS, which the SAEs never saw, is left unedited."""
    hooks = [resolve_site(model, Site(layer, "resid_post")).hook_name for layer in layers]
    bos_id = model.tokenizer.bos_token_id
    bos = token_activations(model, [bos_id], hooks) if bos_id is not None else {}
    parts = []
    normalised = units == "residual-norm"
    for layer, hook in zip(layers, hooks, strict=True):
        vector = spectral.normalised_target_vector(layer) if normalised else spectral.target_vector(layer)
        sae, features = ((localisation.saes[hook], localisation.english_features(hook)) if localisation is not None
                         else (None, ()))
        parts.append(LayerShift(layer, hook, vector, sae, features, bos.get(hook)))
    units_text = ", at each layer's median residual norm, strength / |W|" if normalised else ""
    return ShiftPlan(name, tuple(parts), beta, scale=1 / len(layers) if normalised else 1.0,
                     description=f"v_tgt (rank-r projection of the mean English->target difference{units_text}) "
                                 f"minus beta={beta:g} x English-promoting SAE features, layers "
                                 f"{layers[0]}-{layers[-1]}")


def window_layers(spectral: SpectralReport, window: tuple[int, int] | None, n_layers: int) -> list[int]:
    """The layers of ``window`` (None: stage II's own), checked against the model's depth."""
    first, last = window if window is not None else spectral.window
    if last >= n_layers:
        raise Foxp2Error(f"window {first}-{last} is outside the model's {n_layers} layers")
    return list(range(first, last + 1))


@dataclass
class Preparation:
    """Stages II and I for one (model, target, source), and the variant's plan built from them."""

    spectral: SpectralReport
    localisation: Localisation | None
    """Stage I at the window (None for the variants that do not use it)."""
    plan: ShiftPlan
    gate: GateReport | None = None


@dataclass
class Foxp2Method:
    """FOXP2 (or one of its controls) as a steering method."""

    name: str = "foxp2"
    variant: str = "foxp2"
    """One of :data:`VARIANTS`."""
    config: Foxp2MethodConfig = field(default_factory=Foxp2MethodConfig)
    tunable: bool = True
    default_rule: PositionRule = ALL_POSITIONS
    progress: bool = True
    """Show the stages' progress while preparing."""
    _stages: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)
    """Stage II reports and stage I localisations already loaded; shared by the variants made with
    :meth:`variant_of`, so FOXP2 and its controls prepare each stage once."""

    def variant_of(self, variant: str) -> Foxp2Method:
        """This method's ``variant`` (same configuration, sharing the prepared stages)."""
        return replace(self, name="foxp2" if variant == "foxp2" else f"foxp2-{variant}", variant=variant)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise Foxp2Error(f"unknown FOXP2 variant {self.variant!r}; known: {', '.join(VARIANTS)}")

    def layer_grid(self, model: Model) -> list[int | None]:
        return [None]  # the window is chosen by dev_choices, not as a calibration layer

    def dev_choices(self, model: Model, target: str, source: str, runs: Any, bounds: dict[str, float], *,
                    rule: PositionRule, progress: bool = True) -> dict[str, Any]:
        """The window by J on the dev prompts of ``runs`` (:mod:`.window`), then FOXP2's ``beta`` jointly with the
        strength there (:mod:`.beta`); nothing for what is already fixed."""
        choices: dict[str, Any] = {}
        method = self
        if self.config.window is None and self.config.window_search is not None:
            choices.update(search_window(self, model, target, source, runs, bounds, rule=rule,
                                         config=self.config.window_search, progress=progress).choices())
            method = self.with_choices(choices)
        if self.variant == "foxp2" and self.config.beta_search is not None:
            choices.update(search_beta(method, model, target, source, runs, bounds, rule=rule,
                                       config=self.config.beta_search, progress=progress).choices())
        return choices

    def with_choices(self, choices: dict[str, Any]) -> Foxp2Method:
        """This method with its dev choices applied (the window; ``beta``, which then is no longer searched)."""
        config = self.config
        if "window" in choices:
            config = replace(config, window=(int(choices["window"][0]), int(choices["window"][1])))
        if "beta" in choices:
            config = replace(config, beta=float(choices["beta"]), beta_search=None)
        return self if config == self.config else replace(self, config=config)

    def strength_grid(self) -> list[float]:
        return list(self.config.strengths)

    def fingerprint(self) -> dict[str, Any]:
        config = asdict(self.config)
        if self.variant in _WITHOUT_STAGE_I:  # a new SAE or beta setting leaves their stored runs valid
            for name in ("localise", "beta", "beta_search"):
                del config[name]
        if self.config.window is not None:  # a fixed window is never searched: the search settings do not matter
            del config["window_search"]
        return {"variant": self.variant, "config": config}

    def _memo(self, key: tuple[Any, ...], build: Any) -> Any:
        if key not in self._stages:
            self._stages[key] = build()
        return self._stages[key]

    def spectral(self, model: Model, target: str, source: str) -> SpectralReport:
        """Stage II for ``target`` (from the store after the first run)."""
        return self._memo(("spectral", id(model), target, source), lambda: spectral_stage(
            model, target, source, self.config.pairs, self.config.spectral, progress=self.progress))

    def localisation(self, model: Model, target: str, layers: list[int]) -> Localisation:
        """Stage I for ``target`` at ``layers`` (SAEs and features from the store after the first run)."""
        return self._memo(("localise", id(model), target, tuple(layers)), lambda: localise(
            model, target, layers, self.config.localise, pairs=self.config.pairs, progress=self.progress))

    def prepare(self, model: Model, target: str, source: str) -> Preparation:
        """Stages II and I and this variant's plan, once per (model, target, source)."""
        if target == source:
            raise Foxp2Error(f"the target language must differ from the source ({source!r})")
        config = self.config
        key = ("plan", id(model), target, source, self.variant, config.window, config.units, config.beta)
        return self._memo(key, lambda: self._prepare(model, target, source))

    def _prepare(self, model: Model, target: str, source: str) -> Preparation:
        config = self.config
        spectral = self.spectral(model, target, source)
        layers = window_layers(spectral, config.window, model.cfg.n_layers)
        if self.variant == "shifted-window":
            moved = shifted_window((layers[0], layers[-1]), model.cfg.n_layers)
            localisation = self.localisation(model, target, list(range(moved[0], moved[1] + 1)))
            plan = foxp2_plan(model, spectral, localisation, localisation.layers, beta=config.beta,
                              name="shifted-window", units=config.units)
            return Preparation(spectral, localisation, plan)
        if self.variant == "diffmean-window":
            return Preparation(spectral, None, self._diffmean_plan(model, spectral, target, source, layers))
        if self.variant == "positive-only":  # beta = 0 never reads the SAEs: no stage I (the window search's probe)
            return Preparation(spectral, None, positive_only(foxp2_plan(model, spectral, None, layers,
                                                                        units=config.units)))
        localisation = self.localisation(model, target, layers)
        plan = self._memo(("window-plan", id(model), target, source, tuple(layers), config.units, config.beta),
                          lambda: foxp2_plan(model, spectral, localisation, layers, beta=config.beta,
                                             units=config.units))
        controls = {"negative-only": negative_only, "random-support": partial(
            random_support, seed=config.seed, firing_rates=localisation.report.firing_rates_en)}
        gate = fit_gate(model) if config.gate and self.variant == "foxp2" else None
        variant_plan = plan if self.variant == "foxp2" else controls[self.variant](plan)
        return Preparation(spectral, localisation, variant_plan, gate)

    def _diffmean_plan(self, model: Model, spectral: SpectralReport, target: str, source: str, layers: list[int]
                       ) -> ShiftPlan:
        """The token-level DiffMean vectors at ``layers``, in the same units as FOXP2's target vectors."""
        diffmean = get_method("diffmean").directions(model, target, source)
        if self.config.units == "raw":
            return vector_plan("diffmean-window", {layer: diffmean.vector(layer) for layer in layers}, diffmean.site,
                               f"the token-level DiffMean vectors (natural scale) at layers {layers[0]}-{layers[-1]}")
        norms = spectral.frame["median_norm"]
        vectors = {layer: diffmean.vector(layer) / diffmean.vector(layer).norm() * float(norms[layer])
                   for layer in layers}
        return vector_plan("diffmean-window", vectors, diffmean.site, "the token-level DiffMean directions at each "
                           f"layer's median residual norm, strength / |W|, layers {layers[0]}-{layers[-1]}",
                           scale=1 / len(layers))

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        prepared = self.prepare(model, target, source)
        steers = prepared.plan.interventions(strength, rule)
        probe = prepared.gate.probe if prepared.gate is not None else None
        window = (prepared.plan.layers[0].layer, prepared.plan.layers[-1].layer)
        return Treatment(
            interventions=gated(steers, probe),
            description=f"{self.name}: {prepared.plan.description}, x{strength:g}, positions {rule}"
                        + (" (behind the instruction gate)" if probe is not None else ""),
            provenance={"variant": self.variant, "window": list(window), "plan": prepared.plan.summary(),
                        "gate": prepared.gate.summary() if prepared.gate is not None else None})


def _variant(variant: str) -> Foxp2Method:
    return Foxp2Method().variant_of(variant)


# The controls' registry factories (entry points of the ``workbench.methods`` group).
positive_only_control = partial(_variant, "positive-only")
negative_only_control = partial(_variant, "negative-only")
random_support_control = partial(_variant, "random-support")
shifted_window_control = partial(_variant, "shifted-window")
diffmean_window_control = partial(_variant, "diffmean-window")
