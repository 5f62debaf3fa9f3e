"""Run texts through the model and SAEs once, keeping per-text and per-language feature statistics.

For every site and text: the feature's mean activation over the text's usable tokens (``pooled``, what selectivity
compares across parallel pairs), its peak activation and the position of the peak (for top-activating snippets).
For every site and group (language): how many tokens each feature fired on and the sum of its activations (for
firing rates and the feature's natural activation). Texts keep their input order (pairs stay aligned); padding and
BOS positions are excluded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.activations import TokenBatch
from workbench.backends import Model
from workbench.features.scores import FeatureError
from workbench.saes.data import capture


def indexed_batches(tokenizer: Any, texts: Sequence[str], *, batch_size: int = 16, max_length: int = 128
                    ) -> Iterator[tuple[list[int], TokenBatch]]:
    """Length-sorted, right-padded batches of ``texts`` (BOS prepended), with each row's index in ``texts``."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        encoded = tokenizer([texts[i] for i in indices], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, padding_side="right")
        yield indices, TokenBatch(encoded["input_ids"], encoded["attention_mask"], ["text"] * len(indices))


@dataclass
class EncodedTexts:
    """Feature statistics of a set of texts at several SAE sites (see the module docstring)."""

    texts: list[str]
    group_of_text: list[str]
    groups: list[str]
    token_ids: list[list[int]] = field(repr=False)
    pooled: dict[str, Float[Tensor, "text feature"]] = field(repr=False)
    peak: dict[str, Float[Tensor, "text feature"]] = field(repr=False)
    peak_position: dict[str, Int[Tensor, "text feature"]] = field(repr=False)
    fire_count: dict[str, Float[Tensor, "group feature"]] = field(repr=False)
    active_sum: dict[str, Float[Tensor, "group feature"]] = field(repr=False)
    token_count: Int[Tensor, " group"] = field(repr=False)

    def rows(self, group: str) -> Int[Tensor, " n"]:
        """Indices of the texts of one group, in input order."""
        return torch.tensor([i for i, g in enumerate(self.group_of_text) if g == group], dtype=torch.long)

    def group_index(self, group: str) -> int:
        if group not in self.groups:
            raise FeatureError(f"no texts of group {group!r}; groups: {', '.join(self.groups)}")
        return self.groups.index(group)

    def firing_rate(self, site: str, group: str) -> Float[Tensor, " feature"]:
        """Share of the group's usable tokens on which each feature fired."""
        index = self.group_index(group)
        return self.fire_count[site][index] / max(int(self.token_count[index]), 1)


def encode_texts(model: Model, saes: dict[str, Any], texts_by_group: dict[str, Sequence[str]], *,
                 batch_size: int = 16, max_length: int = 128, exclude_bos: bool = True, progress: bool = True,
                 description: str = "encode") -> EncodedTexts:
    """Feature statistics of every text at every SAE's site (one forward pass per batch serves all sites)."""
    texts = [text for group_texts in texts_by_group.values() for text in group_texts]
    group_of_text = [group for group, group_texts in texts_by_group.items() for _ in group_texts]
    groups = list(texts_by_group)
    if not texts:
        raise FeatureError("no texts to encode")
    if not saes:
        raise FeatureError("no SAEs to encode with")
    n_texts = len(texts)
    sizes = {name: int(sae.cfg.d_sae) for name, sae in saes.items()}
    pooled = {name: torch.zeros(n_texts, d) for name, d in sizes.items()}
    peak = {name: torch.zeros(n_texts, d) for name, d in sizes.items()}
    peak_position = {name: torch.zeros(n_texts, d, dtype=torch.long) for name, d in sizes.items()}
    fire_count = {name: torch.zeros(len(groups), d) for name, d in sizes.items()}
    active_sum = {name: torch.zeros(len(groups), d) for name, d in sizes.items()}
    token_count = torch.zeros(len(groups), dtype=torch.long)
    token_ids: list[list[int]] = [[] for _ in texts]
    group_index = torch.tensor([groups.index(g) for g in group_of_text])

    indexed = list(indexed_batches(model.tokenizer, texts, batch_size=batch_size, max_length=max_length))
    row_indices = iter([indices for indices, _ in indexed])
    for batch_index, captured in enumerate(capture(model, [batch for _, batch in indexed], list(saes),
                                                   exclude_bos=exclude_bos, progress=progress,
                                                   description=description, total=len(indexed))):
        indices = torch.tensor(next(row_indices))
        mask = captured.mask
        for row, index in enumerate(indices.tolist()):
            token_ids[index] = captured.batch.tokens[row][captured.batch.attention_mask[row].bool()].tolist()
        rows_group = group_index[indices]
        token_count.index_add_(0, rows_group, mask.sum(-1))
        weights = mask.float().unsqueeze(-1)
        for name, sae in saes.items():
            with torch.no_grad():
                latents = sae.encode(captured.activations[name].to(sae.dtype)).float() * weights
            counts = mask.sum(-1).clamp_min(1).unsqueeze(-1)
            pooled[name][indices] = latents.sum(1) / counts
            _require_finite(pooled[name][indices], name, batch_index)
            values, positions = latents.max(1)
            peak[name][indices] = values
            peak_position[name][indices] = positions
            fire_count[name].index_add_(0, rows_group, (latents != 0).float().sum(1))
            active_sum[name].index_add_(0, rows_group, latents.sum(1))
    if int(token_count.sum()) == 0:
        raise FeatureError("the texts held no usable tokens")
    return EncodedTexts(texts, group_of_text, groups, token_ids, pooled, peak, peak_position, fire_count,
                        active_sum, token_count)


def _require_finite(latents: Tensor, site: str, batch_index: int) -> None:
    """NaN or inf latents (from non-finite activations) would be counted as firing: stop, naming where."""
    if not torch.isfinite(latents).all():
        raise FeatureError(f"NaN or inf SAE latents at {site} in batch {batch_index}: the activations reaching the "
                           "SAE are not finite (check the model and any hooks)")


@dataclass(frozen=True)
class Snippet:
    """A top-activating context of a feature: the text, its group, the peak token and a window around it."""

    group: str
    text_index: int
    activation: float
    left: str
    token: str
    right: str


def top_snippets(encoded: EncodedTexts, site: str, feature: int, tokenizer: Any, *, k: int = 5, window: int = 8
                 ) -> list[Snippet]:
    """The ``k`` texts where ``feature`` peaks highest, each as a window of ``window`` tokens either side."""
    peaks = encoded.peak[site][:, feature]
    order = peaks.argsort(descending=True)[:k]
    snippets = []
    for index in order.tolist():
        value = float(peaks[index])
        if value <= 0:
            break
        ids = encoded.token_ids[index]
        position = int(encoded.peak_position[site][index, feature])
        snippets.append(Snippet(
            group=encoded.group_of_text[index], text_index=index, activation=value,
            left=tokenizer.decode(ids[max(1, position - window):position]),
            token=tokenizer.decode(ids[position:position + 1]),
            right=tokenizer.decode(ids[position + 1:position + 1 + window]),
        ))
    return snippets


def firing_rates(model: Model, saes: dict[str, Any], batches: Sequence[TokenBatch], *, exclude_bos: bool = True,
                 progress: bool = True, description: str = "firing rates") -> dict[str, Float[Tensor, " feature"]]:
    """Share of the usable tokens of ``batches`` on which each feature of each SAE fires."""
    counts = {name: torch.zeros(int(sae.cfg.d_sae), dtype=torch.float64) for name, sae in saes.items()}
    total = 0
    for batch_index, captured in enumerate(capture(model, batches, list(saes), exclude_bos=exclude_bos,
                                                   progress=progress, description=description, total=len(batches))):
        mask = captured.mask
        total += int(mask.sum())
        for name, sae in saes.items():
            with torch.no_grad():
                latents = sae.encode(captured.activations[name][mask].to(sae.dtype))
            _require_finite(latents, name, batch_index)
            counts[name] += (latents != 0).sum(0).double()
    if total == 0:
        raise FeatureError("no usable tokens to measure firing rates on")
    return {name: (count / total).float() for name, count in counts.items()}


def ordinary_token_ids(tokenizer: Any) -> Int[Tensor, " token"]:
    """Vocabulary ids that are ordinary text pieces: no special, added, ``<...>``-shaped or byte-fallback tokens."""
    excluded = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    keep = [i for i, piece in enumerate(pieces)
            if i not in excluded and piece is not None and not (piece.startswith("<") and piece.endswith(">"))]
    if not keep:
        raise FeatureError("the tokenizer has no ordinary tokens to sample")
    return torch.tensor(keep, dtype=torch.long)


def random_token_batches(tokenizer: Any, n_sequences: int, length: int, *, seed: int = 0, batch_size: int = 16
                         ) -> list[TokenBatch]:
    """Sequences of ``length`` uniformly random ordinary tokens, BOS first (LangFIR's random-token input)."""
    if n_sequences < 1 or length < 1:
        raise FeatureError("need n_sequences >= 1 and length >= 1")
    pool = ordinary_token_ids(tokenizer)
    generator = torch.Generator().manual_seed(seed)
    draws = pool[torch.randint(len(pool), (n_sequences, length), generator=generator)]
    bos = tokenizer.bos_token_id
    tokens = draws if bos is None else torch.cat([torch.full((n_sequences, 1), bos), draws], dim=1)
    mask = torch.ones_like(tokens)
    return [TokenBatch(tokens[i:i + batch_size], mask[i:i + batch_size], ["random"] * len(tokens[i:i + batch_size]))
            for i in range(0, n_sequences, batch_size)]
