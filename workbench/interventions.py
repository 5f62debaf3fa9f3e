"""Interventions: what to change at a site (an edit), where in the sequence (a position rule), as TL hooks.

An :class:`Intervention` is a site, an :class:`Edit` and a :class:`PositionRule`. ``intervention.hooks(model)``
gives TransformerLens ``(hook_name, fn)`` pairs, so interventions compose by concatenation and work on every
backend; :func:`steering` applies a list of them as a context manager::

    with steering(model, [Intervention("blocks.6.hook_resid_post", AddVector(v, 4.0), PositionRule.parse("final+8"))]):
        model.generate(...)

Position rules know absolute positions under the KV cache: each hook counts the columns it has seen since the
last multi-token forward (the prefill), so a one-token decoding step at column ``t`` is recognised as such. Where
the prompt ends is told by whoever runs the model (:func:`prompt_ends`); the workbench's generation and
evaluation functions do that. Outside such a block, a multi-token forward is taken to be the whole prompt, so its
last column is the prompt-final position.

Every edit has a ``strength``; strength 0 is exactly the identity (the formulas reduce to ``h`` bit for bit).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.backends import Hook, Model
from workbench.errors import WorkbenchError
from workbench.sites import resolve_site


class InterventionError(WorkbenchError):
    """An intervention that cannot be applied (wrong width, bad position rule, empty basis)."""


# ----------------------------------------------------------------------------------------------- position rules

_PROMPT_ENDS: ContextVar[Tensor | None] = ContextVar("workbench_prompt_ends", default=None)


@contextmanager
def prompt_ends(columns: Int[Tensor, " batch"] | int) -> Iterator[None]:
    """Declare the column of each row's last prompt token for the forwards run inside the block."""
    token = _PROMPT_ENDS.set(torch.as_tensor(columns).reshape(-1))
    try:
        yield
    finally:
        _PROMPT_ENDS.reset(token)


def declared_prompt_ends() -> Tensor | None:
    """The prompt-end columns declared by the enclosing :func:`prompt_ends` block (None outside one)."""
    return _PROMPT_ENDS.get()


@dataclass(frozen=True)
class PositionRule:
    """Which sequence positions an intervention edits."""

    kind: Literal["all", "prompt_final"] = "all"
    """``all`` positions, or the ``prompt_final`` position (optionally plus the next generated ones)."""
    generated_steps: int = 0
    """With ``prompt_final``: also edit the first ``k`` generated positions after it."""

    def __post_init__(self) -> None:
        if self.kind not in ("all", "prompt_final"):
            raise InterventionError(f"unknown position rule kind {self.kind!r}; use 'all' or 'prompt_final'")
        if self.generated_steps < 0 or (self.kind == "all" and self.generated_steps):
            raise InterventionError("generated_steps must be >= 0 and is only meaningful with kind='prompt_final'")

    @classmethod
    def parse(cls, text: str) -> PositionRule:
        """``"all"``, ``"final"`` or ``"final+k"`` (the prompt-final position and the first k generated steps)."""
        match = re.fullmatch(r"\s*(all|final)(?:\s*\+\s*(\d+))?\s*", text)
        if not match or (match[1] == "all" and match[2]):
            raise InterventionError(f"cannot read position rule {text!r}; use 'all', 'final' or 'final+K' "
                                    "(e.g. final+8)")
        if match[1] == "all":
            return cls()
        return cls("prompt_final", int(match[2] or 0))

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return "final" if not self.generated_steps else f"final+{self.generated_steps}"

    def mask(self, columns: Int[Tensor, " pos"], prompt_end: Int[Tensor, " batch"]) -> Bool[Tensor, "batch pos"]:
        """Which (row, position) pairs to edit, given absolute ``columns`` and each row's prompt-final column."""
        offset = columns.unsqueeze(0) - prompt_end.to(columns.device).unsqueeze(1)
        return (offset >= 0) & (offset <= self.generated_steps)


ALL_POSITIONS = PositionRule()


# ------------------------------------------------------------------------------------------------------- edits

@runtime_checkable
class Edit(Protocol):
    """A pure map of activations ``(..., d) -> (..., d)`` with a ``strength`` (0 = identity)."""

    strength: float

    def width(self) -> int | None:
        """The activation width the edit expects (None: any)."""

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        """The edited activation."""


def _unit(vector: Tensor) -> Tensor:
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise InterventionError("a direction must be finite and non-zero")
    return vector / norm


def _orthonormal(basis: Tensor) -> Tensor:
    if basis.ndim != 2 or basis.shape[0] == 0:
        raise InterventionError(f"a subspace basis must have shape (rank >= 1, d), got {tuple(basis.shape)}")
    q, r = torch.linalg.qr(basis.double().T)
    if (r.diagonal().abs() < 1e-8 * r.diagonal().abs().max()).any():
        raise InterventionError("the subspace basis is rank deficient")
    return q.T.to(basis.dtype)


@dataclass(frozen=True)
class AddVector:
    """``h + strength * vector``."""

    vector: Float[Tensor, " d"]
    """The vector added (raw scale: strength 1 adds it as it is)."""
    strength: float = 1.0
    """Multiple of ``vector`` added."""

    def width(self) -> int:
        return self.vector.shape[-1]

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        return activation + self.strength * self.vector.to(activation)


@dataclass(frozen=True)
class AblateDirection:
    """``h - strength * (h . u) u``: strength 1 removes the component along ``u`` (directional ablation)."""

    direction: Float[Tensor, " d"]
    """The direction (normalised on construction)."""
    strength: float = 1.0
    """Fraction of the component removed (negative values amplify it)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", _unit(self.direction))

    def width(self) -> int:
        return self.direction.shape[-1]

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        unit = self.direction.to(activation)
        return activation - self.strength * (activation @ unit).unsqueeze(-1) * unit


@dataclass(frozen=True)
class Project:
    """Projection onto (``keep='onto'``) or out of (``keep='out'``) the span of ``basis``, by ``strength``.

    onto: ``h - strength * (h - P h)``; out: ``h - strength * P h`` (``P`` the orthogonal projector).
    """

    basis: Float[Tensor, "rank d"]
    """Rows spanning the subspace (orthonormalised on construction)."""
    keep: Literal["onto", "out"] = "out"
    """Keep only the subspace component (onto) or remove it (out)."""
    strength: float = 1.0
    """Interpolation between the identity (0) and the full projection (1)."""

    def __post_init__(self) -> None:
        if self.keep not in ("onto", "out"):
            raise InterventionError(f"keep must be 'onto' or 'out', got {self.keep!r}")
        object.__setattr__(self, "basis", _orthonormal(self.basis))

    def width(self) -> int:
        return self.basis.shape[-1]

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        basis = self.basis.to(activation)
        projected = (activation @ basis.T) @ basis
        removed = activation - projected if self.keep == "onto" else projected
        return activation - self.strength * removed


@dataclass(frozen=True)
class SetComponent:
    """Set the component along ``u`` to ``value``: ``h + strength * (value - h . u) u``."""

    direction: Float[Tensor, " d"]
    """The direction (normalised on construction)."""
    value: float
    """The component's new value."""
    strength: float = 1.0
    """Interpolation between the identity (0) and setting it exactly (1)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", _unit(self.direction))

    def width(self) -> int:
        return self.direction.shape[-1]

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        unit = self.direction.to(activation)
        return activation + self.strength * (self.value - activation @ unit).unsqueeze(-1) * unit


@dataclass(frozen=True)
class SetUnits:
    """Set units (neurons, latents, coordinates) to values: ``h[..., i] += strength * (v_i - h[..., i])``."""

    units: Int[Tensor, " n"]
    """Indices of the units set."""
    values: Float[Tensor, " n_values"]
    """Their new values."""
    strength: float = 1.0
    """Interpolation between the identity (0) and setting them exactly (1)."""

    def __post_init__(self) -> None:
        if self.units.shape != self.values.shape:
            raise InterventionError(f"{len(self.units)} units but {len(self.values)} values")

    def width(self) -> None:
        return None

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        units = self.units.to(activation.device)
        current = activation[..., units]
        edited = activation.clone()
        edited[..., units] = current + self.strength * (self.values.to(activation) - current)
        return edited


@dataclass(frozen=True)
class Rescale:
    """Multiply units (or the whole vector) by ``1 + strength * (factor - 1)``."""

    factor: float
    """The full-strength multiplier (0 zeroes, 2 doubles)."""
    units: Int[Tensor, " n"] | None = None
    """Units rescaled (None: every unit)."""
    strength: float = 1.0
    """Interpolation between the identity (0) and the full factor (1)."""

    def width(self) -> None:
        return None

    def __call__(self, activation: Float[Tensor, "*rows d"]) -> Float[Tensor, "*rows d"]:
        multiplier = 1.0 + self.strength * (self.factor - 1.0)
        if self.units is None:
            return activation * multiplier
        edited = activation.clone()
        units = self.units.to(activation.device)
        edited[..., units] = activation[..., units] * multiplier
        return edited


# -------------------------------------------------------------------------------------------------- the hooks

@dataclass
class PositionalHook:
    """A hook applying ``edit`` (activation -> activation) at the positions ``rule`` selects, counting columns across
    KV-cached steps; what every intervention, in this module or another package, turns its edit into."""

    edit: Any
    rule: PositionRule
    next_column: int = 0
    prefill_end: Tensor | None = field(default=None, repr=False)

    def __call__(self, activation: Float[Tensor, "batch pos d"], hook: Any) -> Float[Tensor, "batch pos d"]:
        if self.rule.kind == "all":
            return self.edit(activation)
        n_columns = activation.shape[1]
        start = 0 if n_columns > 1 else self.next_column
        self.next_column = start + n_columns
        if n_columns > 1:
            declared = declared_prompt_ends()
            self.prefill_end = declared if declared is not None else torch.tensor([n_columns - 1])
        if self.prefill_end is None:
            return activation
        columns = torch.arange(start, start + n_columns, device=activation.device)
        mask = self.rule.mask(columns, self.prefill_end).expand(activation.shape[0], -1)
        if not mask.any():
            return activation
        return torch.where(mask.unsqueeze(-1), self.edit(activation), activation)


@dataclass(frozen=True)
class Intervention:
    """An edit at one site, at the positions a rule selects."""

    site: str
    """A hook name (``blocks.6.hook_resid_post``) or short site (``6.resid_post``)."""
    edit: Edit
    """What is done to the activation there."""
    rule: PositionRule = ALL_POSITIONS
    """Where in the sequence."""

    def hooks(self, model: Model) -> list[Hook]:
        """TransformerLens hooks for ``model`` (validates the site and the edit's width first)."""
        resolved = resolve_site(model, self.site)
        expected, width = self.edit.width(), resolved.width(model)
        if expected is not None and expected != width:
            raise InterventionError(f"{type(self.edit).__name__} has width {expected} but {resolved.hook_name} "
                                    f"has width {width}")
        return [(resolved.hook_name, PositionalHook(self.edit, self.rule))]


@runtime_checkable
class Steer(Protocol):
    """Anything that turns into hooks for a model: an :class:`Intervention`, a neuron or SAE intervention."""

    def hooks(self, model: Model) -> list[Hook]:
        """TransformerLens hooks realising the intervention on ``model``."""


def hooks_for(model: Model, interventions: Sequence[Steer]) -> list[Hook]:
    """All hooks of ``interventions``, in order (fresh position state each call)."""
    return [hook for intervention in interventions for hook in intervention.hooks(model)]


@contextmanager
def steering(model: Model, interventions: Sequence[Steer]) -> Iterator[list[Hook]]:
    """Apply ``interventions`` to every forward (and generation) run inside the block."""
    hooks = hooks_for(model, interventions)
    with model.hooks(fwd_hooks=hooks):
        yield hooks


def add_vector(model: Model, site: str, vector: Float[Tensor, " d"], strength: float = 1.0,
               rule: PositionRule = ALL_POSITIONS) -> Hook:
    """One hook adding ``strength * vector`` at ``site`` (the common case, as a single hook)."""
    (hook,) = Intervention(site, AddVector(vector, strength), rule).hooks(model)
    return hook


def mean_edit_norm(model: Model, interventions: Sequence[Steer], prompts: Sequence[str], *, batch_size: int = 16,
                   max_length: int = 128) -> float:
    """``|delta h|``: the norm of what the interventions change, summed over their hooks, averaged over the prompts'
    tokens (padding excluded; a token a rule leaves alone counts as 0). Each hook's change is its own edit at its
    site, not what earlier edits propagated there. The prompts end where the rules' prompts end."""
    from workbench.backends import device_of, forward_to

    if not prompts:
        raise InterventionError("mean_edit_norm needs at least one prompt")
    total, count = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        encoded = model.tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True,
                                  truncation=True, max_length=max_length, padding_side="right")
        mask = encoded["attention_mask"]
        real = mask.to(device_of(model)).bool()
        sizes: list[Tensor] = []
        hooks = [(name, _recording_edit_size(fn, real, sizes)) for name, fn in hooks_for(model, interventions)]
        with torch.inference_mode(), prompt_ends(mask.sum(-1) - 1):
            forward_to(model, encoded["input_ids"], mask, hooks)
        total += float(torch.stack(sizes).sum()) if sizes else 0.0
        count += int(mask.sum())
    return total / count


def _recording_edit_size(fn: Any, real: Bool[Tensor, "batch pos"], sizes: list[Tensor]) -> Any:
    """``fn`` as a hook that also appends the summed norm of its change over the ``real`` positions to ``sizes``."""
    def recorded(activation: Tensor, hook: Any) -> Tensor:
        edited = fn(activation, hook)
        sizes.append(((edited - activation).float().norm(dim=-1) * real).sum())
        return edited
    return recorded
