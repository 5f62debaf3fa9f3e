"""FOXP2's optional instruction gate: a logistic probe on the prompt that switches the shift off when the prompt
already names an output language ("Answer in Hindi.", "हिंदी में उत्तर दें।").

The probe reads the prompt's mean input embedding (``blocks.0.hook_resid_pre``, BOS and padding excluded), so its
decision exists before the first edited layer of the same forward pass. It is fitted on corpus prompts (negatives)
and the same prompts with an English or native instruction for every corpus language (positives), and checked on
prompts of another split.

    gate = fit_gate(model)                       # GateReport: the probe and its held-out accuracy
    steers = gated(plan.interventions(2.0, rule), gate.probe)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from workbench import corpus
from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.evaluation.token_sets import DEFAULT_LANGUAGES
from workbench.interventions import Hook, Steer, declared_prompt_ends
from workbench.languages import get_language
from workbench.prompting import (
    PromptFormat,
    QAFormat,
    english_instruction,
    native_instruction,
    prompt_format,
    qa_prompt,
)
from workbench.readouts import pooled_means, token_activations

GATE_SITE = "blocks.0.hook_resid_pre"
"""Where the probe reads the prompt: the input embeddings of the first block."""


class GateError(WorkbenchError):
    """A gate that cannot be fitted (too few prompts, one class only)."""


@dataclass(frozen=True)
class GateProbe:
    """``P(prompt names a language) = sigmoid(((x - mean) / scale) . weight + bias)`` on the pooled embedding."""

    weight: Float[Tensor, " d"]
    bias: float
    mean: Float[Tensor, " d"]
    scale: Float[Tensor, " d"]
    threshold: float = 0.5
    """The shift is switched off for prompts whose probability is at least this."""

    def probability(self, pooled: Float[Tensor, "row d"]) -> Float[Tensor, " row"]:
        standardised = (pooled.float() - self.mean.to(pooled.device)) / self.scale.to(pooled.device)
        return torch.sigmoid(standardised @ self.weight.to(pooled.device) + self.bias)

    def names_language(self, pooled: Float[Tensor, "row d"]) -> Tensor:
        return self.probability(pooled) >= self.threshold


@dataclass
class GateReport:
    """The fitted probe and how well it separates instructed from plain prompts on held-out prompts."""

    probe: GateProbe
    accuracy: float
    """Held-out accuracy (plain and instructed prompts of ``eval_split``)."""
    false_off: float
    """Share of held-out plain prompts the gate would switch off (it must stay near 0)."""
    missed: float
    """Share of held-out instructed prompts it would leave on."""
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "false_off": self.false_off, "missed": self.missed, **self.details}


def instructed_prompts(prompts: Sequence[str], languages: Sequence[str], fmt: PromptFormat = QAFormat()
                       ) -> list[str]:
    """Every prompt (in format ``fmt``) with the English and the native "answer in L" instruction for each
    language."""
    instructions = []
    for code in languages:
        instructions.append(english_instruction(code))
        native, _ = native_instruction(code)
        if native not in instructions:
            instructions.append(native)
    return [fmt.with_instruction(prompt, instruction) for prompt in prompts for instruction in instructions]


def _pooled(model: Model, texts: list[str]) -> Tensor:
    return pooled_means(model, texts, [GATE_SITE], progress=False, max_length=96)[0]


def fit_gate(model: Model, *, languages: Sequence[str] | None = None, n_prompts: int = 48, fit_split: str = "discovery",
             eval_split: str = "dev", regularisation: float = 1.0) -> GateReport:
    """Fit the instruction probe on ``fit_split`` prompts and measure it on ``eval_split`` prompts (instructions
    for ``languages``, by default the evaluation's candidate languages)."""
    from sklearn.linear_model import LogisticRegression

    languages = list(languages or DEFAULT_LANGUAGES)
    for code in languages:
        get_language(code)

    def data(split: str) -> tuple[Tensor, np.ndarray]:
        plain = [qa_prompt(model, p.prompt) for p in corpus.prompts(split=split, n=n_prompts)]
        if len(plain) < 2:
            raise GateError(f"the {split} split has fewer than 2 prompts to fit the instruction gate on")
        instructed = instructed_prompts(plain, languages, prompt_format(model))
        features = torch.cat([_pooled(model, plain), _pooled(model, instructed)])
        return features, np.r_[np.zeros(len(plain)), np.ones(len(instructed))]

    x_fit, y_fit = data(fit_split)
    mean, scale = x_fit.mean(0), x_fit.std(0).clamp_min(1e-6)
    classifier = LogisticRegression(C=regularisation, max_iter=2000, class_weight="balanced")
    classifier.fit(((x_fit - mean) / scale).numpy(), y_fit)
    probe = GateProbe(torch.tensor(classifier.coef_[0], dtype=torch.float32), float(classifier.intercept_[0]),
                      mean, scale)
    x_eval, y_eval = data(eval_split)
    off = probe.names_language(x_eval).numpy()
    return GateReport(probe, accuracy=float((off == y_eval.astype(bool)).mean()),
                      false_off=float(off[y_eval == 0].mean()), missed=float(1 - off[y_eval == 1].mean()),
                      details={"languages": languages, "n_fit": len(y_fit), "n_eval": len(y_eval),
                               "fit_split": fit_split, "eval_split": eval_split, "site": GATE_SITE})


@dataclass
class _GateState:
    probe: GateProbe
    special: Tensor
    open: Tensor | None = None


def _special_embeddings(model: Model) -> Tensor:
    """The embeddings of BOS and the pad token at the gate site (rows the pooling skips)."""
    ids = [i for i in (model.tokenizer.bos_token_id, model.tokenizer.pad_token_id) if i is not None]
    return token_activations(model, ids, [GATE_SITE])[GATE_SITE]


def _record(activation: Tensor, hook: Any, state: _GateState) -> Tensor:
    if activation.shape[1] == 1:
        return activation
    ends = declared_prompt_ends()
    ends = torch.full((activation.shape[0],), activation.shape[1] - 1) if ends is None else ends
    values = activation.float()
    columns = torch.arange(values.shape[1], device=values.device)
    distance = torch.cdist(values, state.special.to(values.device).expand(values.shape[0], -1, -1)).amin(-1)
    usable = (columns.unsqueeze(0) <= ends.to(values.device).unsqueeze(1)) & (distance > 1e-3)
    pooled = (values * usable.unsqueeze(-1)).sum(1) / usable.sum(1, keepdim=True).clamp_min(1)
    state.open = ~state.probe.names_language(pooled)
    return activation


def _gate(fn: Any, state: _GateState) -> Any:
    def gated_hook(activation: Tensor, hook: Any) -> Tensor:
        edited = fn(activation, hook)
        if state.open is None or bool(state.open.all()):
            return edited
        return torch.where(state.open.to(activation.device)[:, None, None], edited, activation)

    return gated_hook


@dataclass(frozen=True)
class GatedSteer:
    """Interventions applied only to rows whose prompt the probe does not find naming an output language."""

    steers: tuple[Steer, ...]
    probe: GateProbe

    def hooks(self, model: Model) -> list[Hook]:
        state = _GateState(self.probe, _special_embeddings(model))
        inner = [(name, _gate(fn, state)) for steer in self.steers for name, fn in steer.hooks(model)]
        return [(GATE_SITE, lambda activation, hook: _record(activation, hook, state)), *inner]


def gated(steers: Sequence[Steer], probe: GateProbe | None) -> tuple[Steer, ...]:
    """``steers`` behind the instruction gate (unchanged when ``probe`` is None)."""
    return tuple(steers) if probe is None else (GatedSteer(tuple(steers), probe),)
