"""CLAS neuron categories (categories from Wang et al. 2024) and bridge layers.

On parallel items (the same item in every language), a neuron is *active* for an item in a language when its
mean act(gate) over the item's tokens exceeds ``threshold`` (0). Dataset level: a neuron is active in a language
when it is active on at least ``item_fraction`` of that language's items. Categories per neuron: *dead* (active in
no language), *language-specific* (exactly one), *all-shared* (every language), *partial-shared* (the rest).

Bridge-layer rule (stated; the paper leaves it open): the contiguous window of ``bridge_width`` layers that
maximises the mean of ``partial-shared share - dead share``, among windows that avoid the first ``exclude_first``
and the last ``exclude_last`` layers. The paper's bridge layers lie between the two ends (24-29 of 32 in Llama 3.1
8B, 24-25 of 28 in Qwen 2.5 7B): next to the output the neurons serve prediction, and next to the embeddings a
neuron's activity is driven by the input's script alone, which makes many neurons "partial-shared" among the
languages that share a script (on Gemma 3 270M layers 0-2 and 13-15 score within 0.01 of each other without
``exclude_first``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.neurons.masks import NeuronError, NeuronMask, check_languages

CATEGORIES: tuple[str, ...] = ("dead", "language-specific", "partial-shared", "all-shared")
"""Category names; a neuron's category code is its index here."""
DEAD, SPECIFIC, PARTIAL, SHARED = range(4)


@dataclass(frozen=True)
class ClasConfig:
    """CLAS categorisation and bridge-layer settings."""

    threshold: float = 0.0
    """An item activates a neuron when the neuron's mean act(gate) over the item's tokens exceeds this."""
    item_fraction: float = 0.5
    """Dataset level: active in a language when active on at least this fraction of its items."""
    bridge_width: int = 3
    """Number of contiguous bridge layers selected."""
    exclude_first: int = 2
    """The first layers never chosen as bridge layers."""
    exclude_last: int = 2
    """The last layers never chosen as bridge layers."""
    sensitivity_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    """Other ``item_fraction`` values whose bridge layers are also reported (how much the rule's choice matters)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.item_fraction <= 1.0:
            raise NeuronError(f"item_fraction must be in (0, 1], got {self.item_fraction}")
        if self.bridge_width < 1 or self.exclude_first < 0 or self.exclude_last < 0:
            raise NeuronError("bridge_width >= 1, exclude_first >= 0 and exclude_last >= 0 are required")


def active_fraction(pooled: Float[Tensor, "item layer neuron"], threshold: float = 0.0
                    ) -> Float[Tensor, "layer neuron"]:
    """Fraction of items on which each neuron's pooled activation exceeds ``threshold``."""
    if pooled.shape[0] == 0:
        raise NeuronError("no items to categorise neurons on")
    return (pooled > threshold).float().mean(0)


def categorize(active: Bool[Tensor, "layer neuron lang"]) -> Int[Tensor, "layer neuron"]:
    """Category code per neuron from its dataset-level activity in each language."""
    n_active = active.sum(-1)
    n_languages = active.shape[-1]
    category = torch.full_like(n_active, PARTIAL)
    category[n_active == 0] = DEAD
    category[n_active == 1] = SPECIFIC
    category[n_active == n_languages] = SHARED  # with one language, "active in every language" wins
    return category


def category_shares(category: Int[Tensor, "layer neuron"]) -> Float[Tensor, "layer category"]:
    """Share of each category among each layer's neurons."""
    one_hot = torch.nn.functional.one_hot(category.long(), len(CATEGORIES)).float()
    return einops.reduce(one_hot, "layer neuron category -> layer category", "mean")


def select_bridge_layers(shares: Float[Tensor, "layer category"], width: int = 3, exclude_last: int = 2,
                         exclude_first: int = 0) -> list[int]:
    """The window of ``width`` layers maximising mean(partial-shared - dead share), avoiding the first and last
    layers."""
    score = shares[:, PARTIAL] - shares[:, DEAD]
    usable = shares.shape[0] - exclude_last
    if usable - exclude_first < width:
        raise NeuronError(f"{shares.shape[0]} layers leave no window of {width} bridge layers outside the first "
                          f"{exclude_first} and the last {exclude_last}")
    windows = score[exclude_first:usable].unfold(0, width, 1).mean(-1)
    start = exclude_first + int(windows.argmax())
    return list(range(start, start + width))


def clas(pooled_by_language: dict[str, Float[Tensor, "item layer neuron"]], languages: Sequence[str],
         config: ClasConfig = ClasConfig(), provenance: dict | None = None) -> NeuronMask:
    """CLAS categories: the mask holds each language's language-specific neurons; extras hold the rest.

    Extras: ``active`` (dataset-level activity, layer x neuron x language), ``active_fraction`` and ``category``
    (codes into :data:`CATEGORIES`); ``config`` records the per-layer shares, the bridge layers, and the bridge
    layers the rule would choose at each of ``sensitivity_fractions``.
    """
    languages = check_languages(languages)
    missing = [code for code in languages if code not in pooled_by_language]
    if missing:
        raise NeuronError(f"no pooled activations for {', '.join(missing)}")
    fractions = torch.stack([active_fraction(pooled_by_language[code], config.threshold) for code in languages],
                            dim=-1)
    active = fractions >= config.item_fraction
    category = categorize(active)
    shares = category_shares(category)
    bridge = select_bridge_layers(shares, config.bridge_width, config.exclude_last, config.exclude_first)
    sensitivity = {str(fraction): select_bridge_layers(category_shares(categorize(fractions >= fraction)),
                                                       config.bridge_width, config.exclude_last,
                                                       config.exclude_first)
                   for fraction in config.sensitivity_fractions}
    specific = active & (category == SPECIFIC).unsqueeze(-1)
    n_items = {code: int(pooled_by_language[code].shape[0]) for code in languages}
    return NeuronMask(mask=specific, languages=languages, method="clas",
                      config={"clas": asdict(config), "bridge_layers": bridge, "categories": list(CATEGORIES),
                              "bridge_layers_by_item_fraction": sensitivity,
                              "category_shares": {name: [round(float(v), 6) for v in shares[:, index]]
                                                  for index, name in enumerate(CATEGORIES)},
                              "n_items": n_items, "activation": "mean act(gate) over an item's tokens",
                              **(provenance or {})},
                      extra={"active": active, "active_fraction": fractions, "category": category.to(torch.int8)})


def bridge_masks(mask: NeuronMask, layers: Sequence[int] | None = None, specific: str = "all",
                 source: str | None = None) -> tuple[Bool[Tensor, "layer neuron"], Bool[Tensor, "layer neuron"]]:
    """CLAS intervention masks ``(M_partial, M_specific)``, zero outside ``layers`` (default: the bridge layers).

    ``specific="all"`` suppresses every language-specific neuron (the paper's dataset-level category);
    ``"source"`` only those specific to ``source``.
    """
    if mask.method != "clas" or "category" not in mask.extra:
        raise NeuronError(f"CLAS interventions need a CLAS mask, got a {mask.method!r} mask")
    if specific not in ("all", "source"):
        raise NeuronError(f"specific must be 'all' or 'source', got {specific!r}")
    chosen = list(mask.config["bridge_layers"] if layers is None else layers)
    if any(not 0 <= layer < mask.n_layers for layer in chosen):
        raise NeuronError(f"layers {chosen} outside 0..{mask.n_layers - 1}")
    in_layers = torch.zeros(mask.n_layers, 1, dtype=torch.bool)
    in_layers[chosen] = True
    category = mask.extra["category"].long()
    partial = (category == PARTIAL) & in_layers
    if specific == "all":
        selected = category == SPECIFIC
    else:
        if source is None:
            raise NeuronError("specific='source' needs the source language")
        selected = mask.of(source)
    return partial, selected & in_layers
