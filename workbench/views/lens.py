"""Where the language is decided: logit-lens language mass by layer x position, steered vs unsteered.

The residual stream after each block is put through the model's own final norm (:func:`workbench.backends.
final_norm`: Gemma's RMSNorm with its learned scale) and the unembedding (with the final logit soft-cap), and each
language's share of the resulting next-token distribution is read. After the last block this is the model's own
next-token distribution, so the top row of the map equals the mass generation sees.

    lens = logit_lens_mass(model, prompts, languages=["en", "hi"], hooks=hooks, label="diffmean L4 x1")
    logit_lens_figure([logit_lens_mass(model, prompts, languages=["en", "hi"]), lens], language="hi",
                      marked_layers=[4])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from einops import rearrange
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from workbench.backends import Model, device_of, final_norm, forward_to, unembed
from workbench.evaluation.mass import language_mass
from workbench.evaluation.token_sets import TokenSets, token_sets_for
from workbench.interventions import Hook, prompt_ends
from workbench.plots import TEMPLATE, style

NORM = "the model's final norm (learned scale) after every block, then the unembedding and final logit soft-cap"


@dataclass(frozen=True)
class LensMass:
    """Mean over prompts of each language's logit-lens mass at every layer and the prompts' last positions."""

    label: str
    languages: tuple[str, ...]
    mass: Float[Tensor, "layer position lang"]
    positions: list[str]
    """The first prompt's tokens at the shown positions (prompts are aligned at their ends)."""
    n_prompts: int
    norm: str = NORM


def logit_lens_mass(model: Model, prompts: Sequence[str], *, languages: Sequence[str], hooks: Sequence[Hook] = (),
                    label: str = "unsteered", n_positions: int | None = None,
                    token_sets: TokenSets | None = None) -> LensMass:
    """Logit-lens language mass after every block at the last ``n_positions`` prompt positions (default: the
    shortest prompt's length), averaged over ``prompts``, with ``hooks`` active (told where the prompts end)."""
    if not prompts:
        raise ValueError("logit_lens_mass needs at least one prompt")
    token_sets = token_sets or token_sets_for(model.tokenizer, list(languages))
    masks = token_sets.masks[[token_sets.languages.index(code) for code in languages]]
    encoded = model.tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left")
    shortest = int(encoded["attention_mask"].sum(-1).min())
    n_positions = min(n_positions or shortest, shortest)
    n_layers = model.cfg.n_layers
    captured: dict[int, Tensor] = {}

    def keep(activation: Tensor, hook: object, layer: int) -> None:
        captured[layer] = activation[:, -n_positions:].detach()

    capture = [(f"blocks.{layer}.hook_resid_post", lambda a, hook, layer=layer: keep(a, hook, layer))
               for layer in range(n_layers)]
    with torch.inference_mode(), prompt_ends(encoded["input_ids"].shape[1] - 1):
        forward_to(model, encoded["input_ids"], encoded["attention_mask"], capture, extra_hooks=hooks)
        residual = torch.stack([captured[layer] for layer in range(n_layers)])
        rows = rearrange(residual, "layer batch pos d -> (layer batch pos) d").to(device_of(model))
        mass = torch.cat([language_mass(unembed(model, final_norm(model, chunk)), masks).cpu()
                          for chunk in rows.split(256)])
    mass = rearrange(mass, "(layer batch pos) lang -> layer batch pos lang", layer=n_layers,
                     batch=len(prompts)).mean(1)
    first = encoded["input_ids"][0, -n_positions:].tolist()
    return LensMass(label, tuple(languages), mass, [model.tokenizer.decode([token]) for token in first],
                    len(prompts))


def logit_lens_figure(lenses: Sequence[LensMass], *, language: str, marked_layers: Sequence[int] = (),
                      title: str | None = None) -> go.Figure:
    """One heatmap per lens (side by side) of ``language``'s mass by layer x position, the intervention's layers
    marked by dashed lines; hover shows the value and the token at that position."""
    if not lenses:
        raise ValueError("logit_lens_figure needs at least one lens")
    figure = make_subplots(rows=1, cols=len(lenses), shared_yaxes=True, horizontal_spacing=0.04,
                           subplot_titles=[lens.label for lens in lenses])
    for column, lens in enumerate(lenses, 1):
        values = lens.mass[..., lens.languages.index(language)]
        x = [f"{i - len(lens.positions)}: {token!r}" for i, token in enumerate(lens.positions)]
        figure.add_trace(go.Heatmap(z=values.tolist(), x=x, y=list(range(values.shape[0])), zmin=0, zmax=1,
                                    colorscale="Viridis", colorbar={"title": f"{language} mass"},
                                    showscale=column == len(lenses),
                                    hovertemplate="layer %{y}, position %{x}<br>mass %{z:.3f}<extra></extra>"),
                         row=1, col=column)
        for layer in marked_layers:
            figure.add_hline(y=layer, line={"dash": "dash", "color": "white", "width": 1}, row=1, col=column)
    figure.update_yaxes(title_text="layer (residual after the block)", row=1, col=1)
    figure.update_layout(template=TEMPLATE, title=title or f"Logit lens: {language} mass by layer and position "
                                                           f"(mean over {lenses[0].n_prompts} prompts)")
    return style(figure)
