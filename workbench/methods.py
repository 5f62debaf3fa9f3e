"""Steering methods by name: what ``workbench steer --method X`` and the benchmark runner run.

A method turns (model, target, source, layer, strength, position rule) into a :class:`Treatment`: interventions
(anything with ``.hooks(model)``) and/or a prompt rewrite. Methods that need data (directions, neuron masks)
prepare it on first use and cache it. Built-in: ``none``, ``prompt-en``, ``prompt-native`` and the residual
directions ``diffmean``, ``pca``, ``lda``, ``probe`` (natural scale) and ``pca-matched``, ``lda-matched``,
``probe-matched`` (unit direction x DiffMean's norm: CLaS-Bench's unit-norm x alpha grid). Every other method
registers itself: a package declares it under the ``workbench.methods`` entry-point group (``name =
"module:factory"``; the workbench's own ``lape``, ``clas``, ``foxp2``, ``sae-diffmean`` and ``langfir`` are declared
in its ``pyproject.toml``), loaded only when the method is first built; code can also call :func:`register_method`
at run time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from workbench.backends import Model
from workbench.directions import DIRECTION_METHODS, DirectionDataConfig, DirectionSet, directions_for
from workbench.errors import WorkbenchError
from workbench.interventions import ALL_POSITIONS, AddVector, Intervention, PositionRule, Steer
from workbench.prompting import english_instruction, instruction_rewriter, native_instruction


class MethodError(WorkbenchError):
    """Unknown method name, or a layer/strength a method cannot take."""


@dataclass(frozen=True)
class Treatment:
    """What a method does to the model and to the prompt for one setting."""

    interventions: tuple[Steer, ...] = ()
    """Hook-producing interventions (none for prompting baselines)."""
    prompt_rewriter: Callable[[str], str] | None = None
    """Maps each prompt to the one the model sees (prompting baselines)."""
    description: str = ""
    """One line saying what is applied, for reports."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Where the method's data came from (split, rows, config, instruction source)."""


@runtime_checkable
class SteeringMethod(Protocol):
    """A named steering method with an optional (layer, strength) space to calibrate."""

    name: str
    """Registry name (``diffmean``, ``prompt-en``, ``lape``...)."""
    tunable: bool
    """Whether layer and/or strength matter (calibration searches them)."""
    default_rule: PositionRule
    """Position rule used unless the caller gives one."""

    def layer_grid(self, model: Model) -> list[int | None]:
        """Layers calibration searches ([None] for layer-free methods)."""

    def strength_grid(self) -> list[float]:
        """Strengths calibration searches ([1.0] for fixed-strength methods)."""

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        """The interventions and prompt rewrite for one setting (preparing and caching data on first use)."""

    def fingerprint(self) -> dict[str, Any]:
        """What the treatments depend on besides (model, target, source, layer, strength, rule): the data and
        settings the method's artifacts are built from. Cached calibrations and benchmark runs are keyed by it."""


def fingerprint_digest(method: SteeringMethod) -> str:
    """A short hash of the method's name and :meth:`SteeringMethod.fingerprint`."""
    payload = {"name": method.name, **method.fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class NoSteering:
    """The unsteered model."""

    name: str = "none"
    tunable: bool = False
    default_rule: PositionRule = ALL_POSITIONS

    def layer_grid(self, model: Model) -> list[int | None]:
        return [None]

    def strength_grid(self) -> list[float]:
        return [0.0]

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        return Treatment(description="no steering")

    def fingerprint(self) -> dict[str, Any]:
        return {}


@dataclass
class PromptingMethod:
    """Ask for the target language: "Answer in <Language>." in English (``native=False``) or in the language."""

    name: str
    native: bool
    tunable: bool = False
    default_rule: PositionRule = ALL_POSITIONS

    def layer_grid(self, model: Model) -> list[int | None]:
        return [None]

    def strength_grid(self) -> list[float]:
        return [1.0]

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        instruction, origin = (native_instruction(target) if self.native else
                               (english_instruction(target), "English instruction with the language's English name"))
        return Treatment(prompt_rewriter=instruction_rewriter(instruction, model),
                         description=f"prompt: {instruction!r}",
                         provenance={"instruction": instruction, "instruction_source": origin})

    def fingerprint(self) -> dict[str, Any]:
        return {"native": self.native}


DIRECTION_SCALES: tuple[str, ...] = ("natural", "matched")
"""How a direction method's strength 1 is sized: ``natural``, the means' difference along the direction
(``(mu_target - mu_source) . unit``); ``matched``, the unit direction times the means' difference norm
``||mu_target - mu_source||`` at that layer (CLaS-Bench's unit-norm x alpha, with alpha in units that fit every
layer: at equal strength every direction moves the residual stream as far as DiffMean does)."""


@dataclass
class DirectionMethod:
    """Add a residual direction (DiffMean, PCA, LDA or probe) at one layer, in units of its ``scale``."""

    name: str
    direction: str
    tunable: bool = True
    default_rule: PositionRule = ALL_POSITIONS
    strengths: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    """Strengths calibration may pick (multiples of the ``scale``; 0.1 because into Hindi x0.25 already costs
    more in-language NLL than the trust region allows)."""
    scale: str = "natural"
    """``natural`` or ``matched`` (see :data:`DIRECTION_SCALES`)."""
    data: DirectionDataConfig = field(default_factory=DirectionDataConfig)
    """Which corpus text the directions are fitted on."""
    _sets: dict[tuple[int, str, str], dict[str, DirectionSet]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.scale not in DIRECTION_SCALES:
            raise MethodError(f"scale must be one of {', '.join(DIRECTION_SCALES)}, got {self.scale!r}")

    def layer_grid(self, model: Model) -> list[int | None]:
        """Every other layer from the third to four before the last (2, 4, ..., 14 of 18)."""
        return list(range(2, model.cfg.n_layers - 3, 2))

    def strength_grid(self) -> list[float]:
        return list(self.strengths)

    def fingerprint(self) -> dict[str, Any]:
        return {"direction": self.direction, "data": self.data.digest(),
                **({"scale": self.scale} if self.scale != "natural" else {})}

    def directions(self, model: Model, target: str, source: str, method: str | None = None) -> DirectionSet:
        """The direction set of ``method`` (default: this one's) for ``target`` vs ``source`` (harvested once, then
        cached on disk)."""
        key = (id(model), target, source)
        if key not in self._sets:
            self._sets[key] = directions_for(model, target, source, config=self.data)
        return self._sets[key][method or self.direction]

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        if layer is None:
            raise MethodError(f"method {self.name!r} needs a layer (0..{model.cfg.n_layers - 1})")
        directions = self.directions(model, target, source)
        site = directions.site(layer)
        if self.scale == "natural":
            vector = directions.vector(layer)
        else:
            vector = directions.vector(layer, "unit") * float(self.directions(model, target, source, "diffmean")
                                                              .vector(layer).norm())
        return Treatment(
            interventions=(Intervention(site, AddVector(vector, strength), rule),),
            description=f"{self.direction} {source}->{target} at {site} x{strength:g} ({self.scale} scale "
                        f"{float(vector.norm()):.1f}), positions {rule}",
            provenance={"direction": self.direction, "site": site, "scale": self.scale,
                        "data": directions.metadata.get("data"), "split": directions.metadata.get("split")})


_REGISTRY: dict[str, Callable[[], SteeringMethod]] = {
    "none": NoSteering,
    "prompt-en": lambda: PromptingMethod("prompt-en", native=False),
    "prompt-native": lambda: PromptingMethod("prompt-native", native=True),
    "diffmean": partial(DirectionMethod, "diffmean", "diffmean"),
    # their natural scale is the means' difference along a direction that may be far from it: a wider range
    **{name: partial(DirectionMethod, name, name, strengths=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0))
       for name in DIRECTION_METHODS if name != "diffmean"},
    **{f"{name}-matched": partial(DirectionMethod, f"{name}-matched", name, scale="matched")
       for name in DIRECTION_METHODS if name != "diffmean"},
}
ENTRY_POINT_GROUP = "workbench.methods"
"""Entry-point group through which packages register steering methods."""


def register_method(name: str, factory: Callable[[], SteeringMethod]) -> None:
    """Make ``factory()`` available as ``name`` to ``get_method``, the CLI and the benchmark runner."""
    _REGISTRY[name] = factory


def _load_plugins() -> None:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        _REGISTRY.setdefault(entry_point.name, lambda entry_point=entry_point: entry_point.load()())


def method_names() -> list[str]:
    """Every registered method name."""
    _load_plugins()
    return list(_REGISTRY)


def get_method(name: str) -> SteeringMethod:
    """A fresh instance of the method called ``name``; unknown names list the known ones."""
    _load_plugins()
    if name not in _REGISTRY:
        raise MethodError(f"unknown steering method {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def get_methods(names: Sequence[str]) -> list[SteeringMethod]:
    """Methods for ``names``, all validated before any is built."""
    _load_plugins()
    unknown = [name for name in names if name not in _REGISTRY]
    if unknown:
        raise MethodError(f"unknown steering method(s) {', '.join(map(repr, unknown))}; known: {', '.join(_REGISTRY)}")
    return [_REGISTRY[name]() for name in names]
