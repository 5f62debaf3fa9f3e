"""Activations for SAEs: corpus token batches with a token budget, and one forward pass per batch for many sites.

:func:`capture` runs each batch once, stopping after the deepest block any requested hook needs, and hands back
the activations of every hook at the usable positions (padding, and BOS unless asked, excluded).
:func:`harvest_buffer` stacks them into one float32 buffer per site: ``n_tokens x width x 4`` bytes each (60k
tokens: 0.14 GiB for a width-640 site, 0.46 GiB for ``mlp.hook_post`` of width 2048; 1M tokens: 2.4 GiB for a
width-640 site), in memory, or in memory-mapped files on disk when it exceeds the memory limit.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench.activations import TokenBatch, batch_texts, texts_with_budget
from workbench.backends import Model, forward_to
from workbench.prompting import PromptFormat, QAFormat
from workbench.saes.config import SAEError
from workbench.sites import Site, resolve_site, validate_hook_name


def corpus_batches(tokenizer: Any, languages: Sequence[str], split: str, n_tokens: int, *, max_length: int = 128,
                   batch_size: int = 16, exclude_bos: bool = True, qa_share: float = 0.0,
                   prompt_format: PromptFormat | None = None) -> tuple[list[TokenBatch], dict[str, int]]:
    """Token batches of shipped text, ``n_tokens`` usable tokens shared equally by ``languages``, the share
    ``qa_share`` of each language's tokens from question/answer contexts in ``prompt_format`` (the model's:
    ``Q: ...\nA:`` or its chat template; an English help heading as the question, the paragraph after it in the
    language as the answer; where a language has fewer, monolingual text fills in).

    A language with less text in the split gives all it has, and what it leaves of its share is split equally
    among the others, so the total reaches ``n_tokens`` whenever the split holds that many. Returns the batches
    (labelled by language) and the usable token count taken per language.
    """
    if not languages:
        raise SAEError("no languages given")
    fmt = prompt_format or QAFormat()
    chosen: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    exhausted: set[str] = set()
    while True:
        open_languages = [lang for lang in languages if lang not in exhausted]
        left = n_tokens - sum(counts[lang] for lang in exhausted)
        share = max(1, left // len(open_languages))
        for lang in open_languages:
            chosen[lang], counts[lang] = _language_texts(tokenizer, lang, split, share, max_length, exclude_bos,
                                                         qa_share, fmt)
            if not chosen[lang]:
                raise SAEError(f"no {lang!r} text in split {split!r}")
        short = {lang for lang in open_languages if counts[lang] < share}
        if not short or short == set(open_languages):
            break
        exhausted |= short
    return batch_texts(tokenizer, chosen, batch_size=batch_size, max_length=max_length), counts


def _language_texts(tokenizer: Any, language: str, split: str, budget: int, max_length: int, exclude_bos: bool,
                    qa_share: float, fmt: PromptFormat) -> tuple[list[str], int]:
    """One language's texts for :func:`corpus_batches`: Q/A contexts for ``qa_share`` of ``budget``, monolingual
    text for the rest."""
    from workbench import corpus

    qa_texts, qa_count = [], 0
    if qa_share > 0:
        contexts = [fmt.prompt(pair.question) + fmt.answer_prefix + pair.answer
                    for pair in corpus.qa_pairs(language, split=split)]
        qa_texts, qa_count = texts_with_budget(tokenizer, contexts, round(budget * qa_share), max_length, exclude_bos)
    texts = [row.text for row in corpus.monolingual(language, split=split)]
    plain, count = texts_with_budget(tokenizer, texts, budget - qa_count, max_length, exclude_bos)
    return qa_texts + plain, qa_count + count


def usable_mask(batch: TokenBatch, bos_token_id: int | None, exclude_bos: bool) -> Bool[Tensor, "batch pos"]:
    """Non-padding positions, BOS excluded when asked."""
    mask = batch.attention_mask.bool()
    if exclude_bos and bos_token_id is not None:
        mask = mask & (batch.tokens != bos_token_id)
    return mask


def _bos_id(model: Model) -> int | None:
    tokenizer = getattr(model, "tokenizer", None)
    return getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None


@dataclass
class Captured:
    """One batch's activations at several hooks (full ``batch pos d`` tensors) and its usable positions."""

    batch: TokenBatch
    mask: Bool[Tensor, "batch pos"]
    activations: dict[str, Tensor]


def capture(model: Model, batches: Iterable[TokenBatch], hook_names: Sequence[str], *, exclude_bos: bool = True,
            progress: bool = True, description: str = "capture", total: int | None = None,
            bos_token_id: int | None = None, extra_hooks: Sequence[tuple[str, Any]] = ()) -> Iterator[Captured]:
    """Run each batch once (stopping after the deepest needed block) and yield the activations at ``hook_names``.

    Hooks are attached only during each forward pass, so nothing leaks to the consumer between batches.
    ``extra_hooks`` (e.g. an ablation) are active during the forward passes; they run before the capturing hooks
    of the same hook point, so the captured values include their edits.
    """
    names = list(dict.fromkeys(hook_names))
    if not names:
        raise SAEError("no hook names to capture")
    for name in names:
        validate_hook_name(model, name)
    bos = bos_token_id if bos_token_id is not None else _bos_id(model)
    store: dict[str, Tensor] = {}

    def keep(activation: Tensor, hook: Any, name: str) -> None:
        store[name] = activation.detach().float().cpu()

    hooks = [(name, _bind(keep, name)) for name in names]
    iterator = tqdm(batches, desc=description, total=total, disable=not progress, unit="batch")
    for batch in iterator:
        store.clear()
        # no_grad (not inference_mode): the captured tensors stay ordinary tensors, usable anywhere later
        with torch.no_grad():
            forward_to(model, batch.tokens, batch.attention_mask, hooks, extra_hooks=extra_hooks)
        yield Captured(batch, usable_mask(batch, bos, exclude_bos), dict(store))


def _bind(function: Any, name: str) -> Any:
    def hook(activation: Tensor, hook: Any) -> None:
        function(activation, hook, name)

    return hook


@dataclass
class ActivationBuffer:
    """Activations of several sites at the same tokens, with each token's language; in memory, or in memory-mapped
    files when it is too large for memory (:func:`harvest_buffer`)."""

    activations: dict[str, Float[Tensor, "token d"]]
    """Hook name -> (tokens, width) float32."""
    labels: Int[Tensor, " token"]
    """Index into ``groups`` of each token's language."""
    groups: list[str]
    """Language of each label index."""
    spill_dir: Path | None = None
    """The folder of the memory-mapped files behind ``activations`` (None: in memory); :meth:`release` deletes it."""

    @property
    def n_tokens(self) -> int:
        return int(self.labels.shape[0])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.activations.values())

    def release(self) -> None:
        """Drop the activations (and delete the memory-mapped files, if any)."""
        self.activations = {}
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)


def buffer_gib(n_tokens: int, widths: Sequence[int]) -> float:
    """Size of a float32 buffer of ``n_tokens`` at sites of the given widths, in GiB."""
    return n_tokens * sum(widths) * 4 / 2**30


def _empty_buffers(names: Sequence[str], n_tokens: int, widths: Sequence[int], spill_dir: Path | None
                   ) -> dict[str, Tensor]:
    """Uninitialised (n_tokens, width) float32 tensors, in memory or backed by one file per site in ``spill_dir``."""
    if spill_dir is None:
        return {name: torch.empty(n_tokens, width) for name, width in zip(names, widths, strict=True)}
    spill_dir.mkdir(parents=True, exist_ok=True)
    return {name: torch.from_numpy(np.lib.format.open_memmap(spill_dir / f"{name}.npy", mode="w+", dtype=np.float32,
                                                             shape=(n_tokens, width)))
            for name, width in zip(names, widths, strict=True)}


def harvest_buffer(model: Model, batches: list[TokenBatch], sites: Sequence[Site | str], *, exclude_bos: bool = True,
                   max_gib: float = 8.0, spill_dir: str | Path | None = None, progress: bool = True,
                   description: str = "harvest") -> ActivationBuffer:
    """One forward pass per batch fills a buffer for every site (all sites at the same tokens).

    A buffer larger than ``max_gib`` goes to memory-mapped ``.npy`` files in ``spill_dir`` (refused without one, or
    when its disk lacks the room), so the harvest and the training that reads it run in bounded memory: the page
    cache holds what is being read. Call :meth:`ActivationBuffer.release` to delete the files.
    """
    resolved = [resolve_site(model, site) for site in sites]
    if not resolved:
        raise SAEError("no sites given; pass e.g. ['blocks.6.hook_resid_post']")
    if not batches:
        raise SAEError("no token batches to harvest")
    bos = _bos_id(model)
    masks = [usable_mask(batch, bos, exclude_bos) for batch in batches]
    n_tokens = int(sum(int(mask.sum()) for mask in masks))
    if n_tokens == 0:
        raise SAEError("the batches held no usable tokens (only padding/BOS)")
    widths = [site.width(model) for site in resolved]
    size = buffer_gib(n_tokens, widths)
    spill = None
    if size > max_gib:
        if spill_dir is None:
            raise SAEError(f"the activation buffer would take {size:.2f} GiB ({n_tokens} tokens x widths {widths}), "
                           f"more than max_gib={max_gib} in memory; pass spill_dir to keep it in files on disk, "
                           "lower n_tokens or train fewer sites at once")
        spill = Path(spill_dir)
        check_disk_room(spill, size)
    buffers = _empty_buffers([site.hook_name for site in resolved], n_tokens, widths, spill)
    groups = list(dict.fromkeys(label for batch in batches for label in batch.labels))
    labels = torch.empty(n_tokens, dtype=torch.long)
    cursor = 0
    for captured in capture(model, batches, [site.hook_name for site in resolved], exclude_bos=exclude_bos,
                            progress=progress, description=description, total=len(batches)):
        mask = captured.mask
        count = int(mask.sum())
        for name, buffer in buffers.items():
            buffer[cursor:cursor + count] = captured.activations[name][mask]
        row_labels = torch.tensor([groups.index(label) for label in captured.batch.labels])
        labels[cursor:cursor + count] = row_labels.unsqueeze(-1).expand_as(mask)[mask]
        cursor += count
    return ActivationBuffer(buffers, labels, groups, spill)


def check_disk_room(directory: Path, gib: float) -> None:
    """Refuse early when the disk holding ``directory`` has less than ``gib`` GiB (+ 1 GiB) free."""
    existing = directory
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free / 2**30
    if free < gib + 1.0:
        raise SAEError(f"the activation buffer needs {gib:.1f} GiB on disk in {directory}, but only {free:.1f} GiB "
                       "are free; free some space, lower n_tokens or train fewer sites at once")


def column_moments(data: Float[Tensor, "token d"], chunk: int = 65_536) -> tuple[Float[Tensor, " d"], float]:
    """The mean row (float64) and the mean row norm of ``data``, read in chunks (no full-size copy)."""
    total = torch.zeros(data.shape[-1], dtype=torch.float64)
    norms = 0.0
    for start in range(0, data.shape[0], chunk):
        block = data[start:start + chunk].double()
        total += block.sum(0)
        norms += float(block.norm(dim=-1).sum())
    return total / data.shape[0], norms / data.shape[0]


def shuffled_batches(data: Float[Tensor, "token d"], batch_size: int, seed: int = 0) -> Iterator[Tensor]:
    """An endless stream of minibatches, reshuffled every epoch: the SAELens ``DataProvider`` of a buffer."""
    if data.shape[0] < batch_size:
        raise SAEError(f"the buffer holds {data.shape[0]} tokens, fewer than one batch ({batch_size})")
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(data.shape[0], generator=generator)
        for start in range(0, data.shape[0] - batch_size + 1, batch_size):
            yield data[order[start:start + batch_size]]
