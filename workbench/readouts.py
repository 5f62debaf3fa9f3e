"""Activations read at chosen positions, without statistics: each token id alone (:func:`token_activations`), each
text's mean over its tokens (:func:`pooled_means`) and given positions of token sequences (:func:`activations_at`).
Each forward pass stops after the deepest hooked block."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.activations import HarvestError
from workbench.backends import Model, device_of, forward_to


def token_activations(model: Model, token_ids: Sequence[int], hook_names: Sequence[str]
                      ) -> dict[str, Float[Tensor, "token d"]]:
    """Each hook's activation at each of ``token_ids`` run alone (a one-token sequence per id: e.g. BOS or pad,
    whose activations are the same wherever they occur), running only the blocks needed."""
    captured: dict[str, Tensor] = {}
    hooks = [(name, lambda activation, hook: captured.__setitem__(hook.name, activation[:, 0].float().clone()))
             for name in hook_names]
    with torch.inference_mode():
        forward_to(model, torch.tensor(list(token_ids)).unsqueeze(1), None, hooks)
    return captured


def length_sorted_batches(tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_length: int
                          ) -> list[tuple[list[int], Tensor, Tensor]]:
    """``texts`` tokenized (right-padded, truncated to ``max_length``) in batches of similar length, as
    (indices into ``texts``, token ids, attention mask): padding to each batch's longest text then costs little."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda index: (lengths[index], index))
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        encoded = tokenizer([texts[index] for index in indices], return_tensors="pt", padding=True,
                            padding_side="right", truncation=True, max_length=max_length)
        batches.append((indices, encoded["input_ids"], encoded["attention_mask"]))
    return batches


def pooled_means(model: Model, texts: Sequence[str], hook_names: Sequence[str], *, transform: Any = None,
                 batch_size: int = 16, max_length: int = 128, progress: bool = True, description: str = "pool"
                 ) -> Float[Tensor, "hook text d"]:
    """Per text, the mean over its tokens (BOS and padding excluded) of each hook's activation (``transform``
    applied first, e.g. a gate's activation function); one forward pass per batch of similar lengths, stopping after
    the deepest hooked block."""
    if not texts:
        raise HarvestError("no texts to pool")
    bos = getattr(model.tokenizer, "bos_token_id", None)
    device = device_of(model)
    pooled: list[list[Tensor]] = [[] for _ in hook_names]

    def pool(activation: Tensor, hook: Any, index: int, weights: Tensor) -> None:
        values = activation.float() if transform is None else transform(activation.float())
        summed = einops.einsum(values, weights, "batch pos d, batch pos -> batch d")
        pooled[index].append((summed / weights.sum(-1, keepdim=True).clamp_min(1)).cpu())

    batches = length_sorted_batches(model.tokenizer, texts, batch_size=batch_size, max_length=max_length)
    with torch.inference_mode():
        for _, tokens, mask in tqdm(batches, desc=description, disable=not progress, unit="batch"):
            usable = mask.bool() & (tokens != bos) if bos is not None else mask.bool()
            weights = usable.float().to(device)
            hooks = [(name, partial(pool, index=index, weights=weights)) for index, name in enumerate(hook_names)]
            forward_to(model, tokens, mask, hooks)
    order = torch.tensor([index for indices, _, _ in batches for index in indices])
    return torch.stack([torch.cat(chunks) for chunks in pooled])[:, torch.argsort(order)]


def activations_at(model: Model, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                   hook_names: Sequence[str], *, batch_size: int = 16, progress: bool = True,
                   description: str = "activations") -> Float[Tensor, "hook row d"]:
    """Each hook's activation at the given ``positions`` of each token sequence, rows in sequence then position
    order; one forward pass per batch (right-padded), stopping after the deepest hooked block."""
    if len(sequences) != len(positions):
        raise HarvestError(f"{len(sequences)} sequences but {len(positions)} position lists: pass one per sequence")
    for ids, wanted in zip(sequences, positions, strict=True):
        if any(not 0 <= p < len(ids) for p in wanted):
            raise HarvestError(f"positions {list(wanted)} fall outside a sequence of {len(ids)} tokens")
    if not sum(len(wanted) for wanted in positions):
        raise HarvestError("no positions to read")
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    device = device_of(model)
    rows: list[list[Tensor]] = [[] for _ in hook_names]

    def read(activation: Tensor, hook: Any, index: int, batch_rows: Tensor, batch_positions: Tensor) -> None:
        rows[index].append(activation[batch_rows, batch_positions].float().cpu())

    with torch.inference_mode():
        for start in tqdm(range(0, len(sequences), batch_size), desc=description, disable=not progress,
                          unit="batch"):
            chunk = sequences[start:start + batch_size]
            width = max(len(ids) for ids in chunk)
            tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):
                tokens[row, :len(ids)] = torch.tensor(list(ids))
                mask[row, :len(ids)] = 1
            wanted = positions[start:start + batch_size]
            batch_rows = torch.tensor([row for row, ps in enumerate(wanted) for _ in ps], device=device)
            batch_positions = torch.tensor([p for ps in wanted for p in ps], device=device)
            hooks = [(name, partial(read, index=index, batch_rows=batch_rows, batch_positions=batch_positions))
                     for index, name in enumerate(hook_names)]
            forward_to(model, tokens, mask, hooks)
    return torch.stack([torch.cat(chunks) for chunks in rows])
