"""Neural FOXP2 as a registered steering method, with its controls as registered variants.

    method = get_method("foxp2")                     # or "foxp2-positive-only", "foxp2-random-support", ...
    treatment = method.treatment(model, "hi", "en", layer=None, strength=0.2, rule=ALL_POSITIONS)

On first use for a (model, target, source) the method prepares its stages through the store: stage II (spectra and
window, :func:`.spectra.spectral_stage`) and stage I at the window (SAEs and the English-promoting features,
:func:`.sae_features.localise`), then builds its :class:`.shift.ShiftPlan`. Its treatment is the plan's
interventions at the given strength (``lambda``, a multiple of the whole shift); the window is the method's own
choice, so calibration searches strengths only, by the trust-region strategy (:mod:`workbench.calibration`).

Variants (METHODS section 3's controls): ``positive-only`` (no English-feature suppression), ``negative-only`` (no
target vector), ``random-support`` (a random direction of the same norm and as many random latents),
``shifted-window`` (the same construction at a window of the same width outside the chosen one, with its own SAEs)
and ``diffmean-window`` (the token-level DiffMean vectors at the window's layers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from workbench.activations import token_activations
from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.foxp2.gate import GateReport, fit_gate, gated
from workbench.foxp2.sae_features import Localisation, LocaliseConfig, localise
from workbench.foxp2.shift import LayerShift, ShiftPlan, negative_only, positive_only, random_support, vector_plan
from workbench.foxp2.spectra import PairDataConfig, SpectralReport, spectral_stage
from workbench.foxp2.trust import TrustRegionConfig
from workbench.interventions import ALL_POSITIONS, PositionRule
from workbench.methods import Treatment, get_method
from workbench.sites import Site, resolve_site
from workbench.spectral import SpectralConfig

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
    """Strengths calibration may pick (``lambda``, multiples of the whole shift)."""


def shifted_window(window: tuple[int, int], n_layers: int) -> tuple[int, int]:
    """A window of the same width outside the chosen one: right after it if it fits, else right before it."""
    first, last = window
    width = last - first + 1
    if last + width < n_layers:
        return last + 1, last + width
    if first - width >= 0:
        return first - width, first - 1
    raise Foxp2Error(f"no room for a window of width {width} outside layers {first}-{last} of {n_layers}")


def foxp2_plan(model: Model, spectral: SpectralReport, localisation: Localisation, layers: list[int], *,
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
        return [None]  # the window is stage II's choice, not a calibration parameter

    def strength_grid(self) -> list[float]:
        return list(self.config.strengths)

    def fingerprint(self) -> dict[str, Any]:
        return {"variant": self.variant, "config": asdict(self.config)}

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
            model, target, layers, self.config.localise, progress=self.progress))

    def prepare(self, model: Model, target: str, source: str) -> Preparation:
        """Stages II and I and this variant's plan, once per (model, target, source)."""
        if target == source:
            raise Foxp2Error(f"the target language must differ from the source ({source!r})")
        return self._memo(("plan", id(model), target, source, self.variant), lambda: self._prepare(
            model, target, source))

    def _prepare(self, model: Model, target: str, source: str) -> Preparation:
        config = self.config
        spectral = self.spectral(model, target, source)
        layers = list(range(spectral.window[0], spectral.window[1] + 1))
        if self.variant == "shifted-window":
            moved = shifted_window(spectral.window, model.cfg.n_layers)
            localisation = self.localisation(model, target, list(range(moved[0], moved[1] + 1)))
            plan = foxp2_plan(model, spectral, localisation, localisation.layers, beta=config.beta,
                              name="shifted-window")
            return Preparation(spectral, localisation, plan)
        if self.variant == "diffmean-window":
            diffmean = get_method("diffmean").directions(model, target, source)
            plan = vector_plan("diffmean-window", {layer: diffmean.vector(layer) for layer in layers}, diffmean.site,
                               f"the token-level DiffMean vectors (natural scale) at layers {layers[0]}-{layers[-1]}")
            return Preparation(spectral, None, plan)
        localisation = self.localisation(model, target, layers)
        plan = self._memo(("window-plan", id(model), target, source), lambda: foxp2_plan(
            model, spectral, localisation, layers, beta=config.beta))
        controls = {"positive-only": positive_only, "negative-only": negative_only,
                    "random-support": partial(random_support, seed=config.seed)}
        gate = fit_gate(model) if config.gate and self.variant == "foxp2" else None
        variant_plan = plan if self.variant == "foxp2" else controls[self.variant](plan)
        return Preparation(spectral, localisation, variant_plan, gate)

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        prepared = self.prepare(model, target, source)
        steers = prepared.plan.interventions(strength, rule)
        probe = prepared.gate.probe if prepared.gate is not None else None
        window = prepared.spectral.window
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
