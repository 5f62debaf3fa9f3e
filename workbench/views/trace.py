"""Language mass during generation: per generated step, each language's next-token mass, steered vs unsteered.

    unsteered = mass_trace(model, prompts, languages=["en", "hi", "mr"])
    steered = mass_trace(model, prompts, languages=["en", "hi", "mr"], hooks=hooks, label="diffmean L4 x1")
    mass_trace_figure([unsteered, steered]).show()

Greedy decoding for a fixed number of steps (no early stop, so every prompt has every step). The mass is read from
the raw next-token logits each step computes anyway; the token shown on hover is their argmax, which greedy
decoding emits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.backends import Model
from workbench.evaluation.mass import language_mass
from workbench.evaluation.token_sets import TokenSets, token_sets_for
from workbench.generation import generate_recording
from workbench.interventions import Hook
from workbench.plots import TEMPLATE, language_colour, style

DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
"""Line style per trace, in order (the first trace, usually the unsteered one, is solid)."""


@dataclass(frozen=True)
class MassTrace:
    """Each language's next-token mass at every generated step of every prompt, and the tokens generated."""

    label: str
    """What was run (e.g. ``unsteered``, ``diffmean L4 x1``)."""
    languages: tuple[str, ...]
    mass: Float[Tensor, "prompt step lang"]
    tokens: list[list[str]]
    """The token generated at each step of each prompt, as text."""

    def band(self, language: str) -> tuple[Tensor, Tensor, Tensor]:
        """Per step: mean over prompts of ``language``'s mass and its normal-approximation 95% interval."""
        values = self.mass[..., self.languages.index(language)]
        mean = values.mean(0)
        half = 1.96 * values.std(0, correction=1) / len(values) ** 0.5 if len(values) > 1 else torch.zeros_like(mean)
        return mean, (mean - half).clamp_min(0), (mean + half).clamp_max(1)


def _mass_and_choice(logits: Tensor, masks: Tensor) -> Tensor:
    return torch.cat([language_mass(logits, masks), logits.argmax(-1, keepdim=True).float()], -1)


def mass_trace(model: Model, prompts: Sequence[str], *, languages: Sequence[str], hooks: Sequence[Hook] = (),
               label: str = "unsteered", max_new_tokens: int = 16, batch_size: int = 16,
               token_sets: TokenSets | None = None) -> MassTrace:
    """Generate ``max_new_tokens`` greedy tokens per prompt with ``hooks`` active, recording every step."""
    token_sets = token_sets or token_sets_for(model.tokenizer, list(languages))
    rows = [token_sets.languages.index(code) for code in languages]
    masks = token_sets.masks[rows]
    generation = generate_recording(model, prompts, hooks=hooks, step_reducer=partial(_mass_and_choice, masks=masks),
                                    record_steps=max_new_tokens, max_new_tokens=max_new_tokens,
                                    batch_size=batch_size, stop_at_eos=False)
    recorded = generation.step_values
    chosen = recorded[..., -1].long()
    tokens = [[model.tokenizer.decode([token]) for token in row] for row in chosen.tolist()]
    return MassTrace(label, tuple(languages), recorded[..., :-1], tokens)


def _step_tokens(trace: MassTrace, step: int, top: int = 3) -> str:
    counts = Counter(row[step] for row in trace.tokens).most_common(top)
    return ", ".join(f"{token!r} x{count}" for token, count in counts)


def mass_trace_figure(traces: Sequence[MassTrace], *, languages: Sequence[str] | None = None,
                      title: str | None = None) -> go.Figure:
    """Mean mass per step (line) with its 95% band over prompts, per language (fixed colours) and trace (dash)."""
    if not traces:
        raise ValueError("mass_trace_figure needs at least one trace")
    languages = list(languages or traces[0].languages)
    figure = go.Figure()
    for dash, trace in zip(DASHES, traces, strict=False):
        steps = list(range(1, trace.mass.shape[1] + 1))
        hover = [_step_tokens(trace, step - 1) for step in steps]
        for code in languages:
            mean, low, high = trace.band(code)
            colour = language_colour(code)
            group = f"{trace.label}/{code}"
            figure.add_trace(go.Scatter(x=steps + steps[::-1], y=high.tolist() + low.tolist()[::-1], fill="toself",
                                        fillcolor=colour, opacity=0.15, line={"width": 0}, hoverinfo="skip",
                                        legendgroup=group, showlegend=False, name=f"{group} 95% band"))
            figure.add_trace(go.Scatter(
                x=steps, y=mean.tolist(), mode="lines+markers", name=f"{code} ({trace.label})", legendgroup=group,
                line={"color": colour, "dash": dash}, customdata=hover,
                hovertemplate=f"{code}, {trace.label}<br>step %{{x}}: mass %{{y:.3f}}<br>tokens: %{{customdata}}"
                              "<extra></extra>"))
    n = len(traces[0].mass)
    figure.update_layout(template=TEMPLATE, xaxis_title="generated step", yaxis_title="next-token mass",
                         yaxis_range=[0, 1], title=title or f"Language mass during generation (mean and 95% band "
                                                            f"over {n} prompts)")
    return style(figure)
