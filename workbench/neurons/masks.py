"""Neuron masks: which MLP neurons (layer, neuron) a method assigns to which language.

A :class:`NeuronMask` is a boolean tensor ``(layer, neuron, language)`` plus the language codes, the method name,
the method's configuration and provenance (json-ready), optional per-language scores and named extra tensors
(entropies, activation probabilities, CLAS categories...). It saves as ``mask.safetensors`` + ``mask.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.artifacts import atomic_write_json, load_tensors, read_json, save_tensors
from workbench.errors import WorkbenchError
from workbench.languages import get_language


class NeuronError(WorkbenchError):
    """Bad input to a neuron method (empty data, unknown language, mismatched shapes, no gated MLP)."""


def check_languages(languages: Sequence[str]) -> tuple[str, ...]:
    """Validated, duplicate-free language codes (unknown codes raise with close matches)."""
    codes = tuple(languages)
    if not codes:
        raise NeuronError("no languages given; pass at least one code, e.g. en,es,hi")
    for code in codes:
        get_language(code)
    if len(set(codes)) != len(codes):
        raise NeuronError(f"duplicate language codes in {list(codes)}")
    return codes


@dataclass(frozen=True)
class NeuronMask:
    """Neurons selected per language by one method."""

    mask: Bool[Tensor, "layer neuron lang"]
    """``mask[l, i, k]``: neuron ``i`` of layer ``l`` is assigned to language ``languages[k]``."""
    languages: tuple[str, ...]
    """Language codes, in the order of the last axis."""
    method: str
    """Method name (``lape``, ``ap90``, ``clas``, ``expertise``)."""
    config: dict[str, Any] = field(default_factory=dict)
    """The method's configuration and provenance (json-ready)."""
    scores: Float[Tensor, "layer neuron lang"] | None = None
    """Per-language scores the selection ranked by (method specific), if any."""
    extra: dict[str, Tensor] = field(default_factory=dict)
    """Further named tensors (method specific, e.g. ``entropy`` or ``category``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "languages", check_languages(self.languages))
        if self.mask.ndim != 3 or self.mask.dtype != torch.bool:
            raise NeuronError(f"a neuron mask is a bool tensor (layer, neuron, language); got {self.mask.dtype} "
                              f"of shape {tuple(self.mask.shape)}")
        if self.mask.shape[-1] != len(self.languages):
            raise NeuronError(f"mask has {self.mask.shape[-1]} language columns but {len(self.languages)} "
                              f"languages were named ({', '.join(self.languages)})")
        if self.scores is not None and self.scores.shape != self.mask.shape:
            raise NeuronError(f"scores of shape {tuple(self.scores.shape)} do not match the mask "
                              f"{tuple(self.mask.shape)}")

    # ------------------------------------------------------------------ shape and lookup
    @property
    def n_layers(self) -> int:
        return self.mask.shape[0]

    @property
    def d_mlp(self) -> int:
        return self.mask.shape[1]

    def index(self, language: str) -> int:
        """Column of ``language`` (unknown or absent codes raise, naming the mask's languages)."""
        get_language(language)
        if language not in self.languages:
            raise NeuronError(f"language {language!r} is not in this {self.method} mask; it has "
                              f"{', '.join(self.languages)}")
        return self.languages.index(language)

    def of(self, language: str) -> Bool[Tensor, "layer neuron"]:
        """The neurons assigned to one language."""
        return self.mask[..., self.index(language)]

    def union(self) -> Bool[Tensor, "layer neuron"]:
        """Neurons assigned to at least one language."""
        return self.mask.any(-1)

    def units(self, language: str) -> dict[int, Int[Tensor, " n"]]:
        """Layer -> indices of the language's neurons there (layers without any are left out)."""
        return units_by_layer(self.of(language))

    # ------------------------------------------------------------------ counts
    @property
    def n_selected(self) -> int:
        """Distinct neurons assigned to any language."""
        return int(self.union().sum())

    def per_language(self) -> dict[str, int]:
        """Neurons per language (a neuron shared by two languages counts for both)."""
        counts = einops.reduce(self.mask.long(), "layer neuron lang -> lang", "sum")
        return {code: int(count) for code, count in zip(self.languages, counts, strict=True)}

    def per_layer(self) -> list[int]:
        """Distinct selected neurons per layer."""
        return [int(count) for count in self.union().sum(-1)]

    def per_layer_language(self) -> dict[str, list[int]]:
        """Language -> neurons per layer."""
        counts = einops.reduce(self.mask.long(), "layer neuron lang -> lang layer", "sum")
        return {code: [int(c) for c in row] for code, row in zip(self.languages, counts, strict=True)}

    def language_jaccard(self) -> Float[Tensor, "lang lang"]:
        """Jaccard overlap of the languages' neuron sets with each other."""
        return jaccard_matrix(self.mask, self.mask)

    def jaccard_with(self, other: NeuronMask) -> dict[str, float]:
        """Per shared language, the Jaccard overlap of this mask's set and ``other``'s."""
        if self.mask.shape[:2] != other.mask.shape[:2]:
            raise NeuronError(f"masks of different models: {tuple(self.mask.shape[:2])} vs "
                              f"{tuple(other.mask.shape[:2])}")
        return {code: jaccard(self.of(code), other.of(code)) for code in self.languages if code in other.languages}

    def summary(self) -> dict[str, Any]:
        """``method``, ``n_selected``, ``per_language``, ``per_layer`` and ``per_layer_language``."""
        return {"method": self.method, "n_selected": self.n_selected, "per_language": self.per_language(),
                "per_layer": self.per_layer(), "per_layer_language": self.per_layer_language()}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``mask.safetensors`` (mask, scores, extras) and ``mask.json`` (languages, method, config)."""
        directory = Path(directory)
        tensors: dict[str, Tensor] = {"mask": self.mask}
        if self.scores is not None:
            tensors["scores"] = self.scores
        tensors.update({f"extra/{name}": tensor for name, tensor in self.extra.items()})
        save_tensors(tensors, directory / "mask.safetensors")
        atomic_write_json(directory / "mask.json", {"method": self.method, "languages": list(self.languages),
                                                    "config": self.config, **self.summary()})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> NeuronMask:
        directory = Path(directory)
        if not (directory / "mask.json").is_file():
            raise NeuronError(f"no neuron mask at {directory} (mask.json missing)")
        info = read_json(directory / "mask.json")
        tensors = load_tensors(directory / "mask.safetensors")
        extra = {name.removeprefix("extra/"): t for name, t in tensors.items() if name.startswith("extra/")}
        return cls(mask=tensors["mask"], languages=tuple(info["languages"]), method=info["method"],
                   config=info["config"], scores=tensors.get("scores"), extra=extra)


def units_by_layer(selected: Bool[Tensor, "layer neuron"]) -> dict[int, Int[Tensor, " n"]]:
    """Layer -> indices of the selected neurons (layers with none are left out)."""
    return {layer: row.nonzero().flatten() for layer, row in enumerate(selected) if row.any()}


def jaccard(a: Bool[Tensor, "layer neuron"], b: Bool[Tensor, "layer neuron"]) -> float:
    """``|a & b| / |a | b|`` (1.0 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def jaccard_matrix(a: Bool[Tensor, "layer neuron lang_a"], b: Bool[Tensor, "layer neuron lang_b"]
                   ) -> Float[Tensor, "lang_a lang_b"]:
    """Jaccard overlap of every column of ``a`` with every column of ``b``."""
    flat_a = einops.rearrange(a, "layer neuron lang -> lang (layer neuron)").float()
    flat_b = einops.rearrange(b, "layer neuron lang -> lang (layer neuron)").float()
    intersection = flat_a @ flat_b.T
    union = flat_a.sum(-1, keepdim=True) + flat_b.sum(-1).unsqueeze(0) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))
