"""Every unit of one site read in one bounded pass, cached: what a card shows without touching the corpus again.

For a site (an SAE's latents, or an MLP layer's gate pre-activations) and the held-out text of each language, the
pass keeps per unit and language: the number of usable tokens where it fires (value > 0), a uniform reservoir of
``reservoir_size`` of its positive values (random keys, smallest kept: exact uniform sampling in one pass), and the
``n_contexts`` texts where it peaks highest (their row numbers in the deterministic held-out batches). Memory is
bounded by units x (reservoir + contexts), whatever the amount of text. The result is a store entry
(:data:`UNIT_STATISTICS`), so the first card of a site pays for the pass and every later card of any unit of that
site reads it; a card re-reads only its few top texts (one short forward pass) to highlight the firing tokens.

The held-out NLL of each language without any edit (what a card's ablation is compared with) is cached the same way
(:func:`clean_cross_entropy`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from workbench.activations import TokenBatch
from workbench.artifacts import atomic_write_json, read_json
from workbench.backends import Model
from workbench.features.ablation import AblationConfig, language_batches
from workbench.models import model_key
from workbench.saes.data import capture
from workbench.saes.quality import token_cross_entropy
from workbench.store import HELD_OUT_CE, UNIT_STATISTICS, Store, digest

UnitValues = Callable[[Tensor], Tensor]
"""Maps the activation at the site's hook (batch, pos, d) to every unit's value (batch, pos, units)."""


@dataclass(frozen=True)
class StatisticsConfig:
    """What the pass keeps."""

    reservoir_size: int = 256
    """Positive values kept per unit and language (the distribution a card shows)."""
    n_contexts: int = 3
    """Top texts kept per unit and language."""
    seed: int = 0
    """Seed of the reservoir's random keys."""


@dataclass
class LanguageStatistics:
    """One language's statistics for every unit of a site."""

    usable: int
    """Usable tokens read (BOS and padding excluded)."""
    fired: Int[Tensor, " unit"]
    """Usable tokens where each unit's value is > 0."""
    reservoir: Float[Tensor, "sample unit"]
    """A uniform sample of each unit's positive values (NaN where it fired fewer times than the reservoir holds)."""
    top_rows: Int[Tensor, "context unit"]
    """Row numbers (in this language's held-out batches, concatenated) of each unit's top texts, best first (-1:
    none)."""
    top_peaks: Float[Tensor, "context unit"]
    """Each top text's peak value."""

    def firing_rate(self, unit: int) -> float:
        return int(self.fired[unit]) / max(self.usable, 1)

    def values(self, unit: int) -> list[float]:
        column = self.reservoir[:, unit]
        return column[~column.isnan()].tolist()

    def rows(self, unit: int) -> list[int]:
        return [int(row) for row, peak in zip(self.top_rows[:, unit], self.top_peaks[:, unit], strict=True)
                if row >= 0 and peak > 0]


def read_statistics(model: Model, batches: Sequence[TokenBatch], hook: str, unit_values: UnitValues,
                    config: StatisticsConfig = StatisticsConfig(), *, progress: bool = False,
                    description: str = "unit statistics") -> LanguageStatistics:
    """The statistics of every unit over ``batches`` (one language's held-out text) in one pass."""
    generator = torch.Generator().manual_seed(config.seed)
    usable, fired, keys, reservoir, top_rows, top_peaks = 0, None, None, None, None, None
    row_offset = 0
    for captured in capture(model, batches, [hook], progress=progress, description=description):
        with torch.no_grad():
            values = unit_values(captured.activations[hook]).float()
        mask = captured.mask
        positive = (values > 0) & mask[..., None]
        flat_values = values[mask]
        flat_positive = positive[mask]
        usable += int(mask.sum())
        counts = flat_positive.sum(0)
        batch_keys = torch.rand(flat_values.shape, generator=generator).masked_fill(~flat_positive, float("inf"))
        peaks = values.masked_fill(~mask[..., None], float("-inf")).amax(1)
        rows = torch.arange(row_offset, row_offset + len(peaks))[:, None].expand_as(peaks)
        row_offset += len(peaks)
        if fired is None:
            fired, keys, reservoir = torch.zeros_like(counts), batch_keys[:0], flat_values[:0]
            top_rows, top_peaks = rows[:0], peaks[:0]
        fired = fired + counts
        keys, reservoir = _smallest(torch.cat([keys, batch_keys]), torch.cat([reservoir, flat_values]),
                                    config.reservoir_size)
        top_peaks, top_rows = _largest(torch.cat([top_peaks, peaks]), torch.cat([top_rows, rows]), config.n_contexts)
    if fired is None:
        raise ValueError("no held-out batches to read")
    reservoir = reservoir.masked_fill(keys.isinf(), float("nan"))
    return LanguageStatistics(usable, fired, reservoir, top_rows, top_peaks)


def _smallest(keys: Tensor, values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per column, the ``k`` entries with the smallest keys (fewer where there are fewer rows)."""
    kept, index = keys.topk(min(k, len(keys)), dim=0, largest=False)
    return kept, values.gather(0, index)


def _largest(peaks: Tensor, rows: Tensor, k: int) -> tuple[Tensor, Tensor]:
    kept, index = peaks.topk(min(k, len(peaks)), dim=0)
    return kept, rows.gather(0, index)


def unit_statistics(model: Model, hook: str, unit_values: UnitValues, identity: dict[str, Any],
                    held_out: AblationConfig, config: StatisticsConfig = StatisticsConfig(), *,
                    progress: bool = False) -> dict[str, LanguageStatistics]:
    """Language -> statistics of every unit at ``hook`` over ``held_out``'s text (cached; ``identity`` names what
    the units are, e.g. the SAE's weights digest, so other units never reuse an entry)."""
    key = {"model": model_key(model), "hook": hook, "identity": identity, "held_out": asdict(held_out),
           "config": asdict(config)}
    entry = Store().entry(UNIT_STATISTICS, key, scope=model_key(model), label=hook)
    if entry.ready():
        tensors = load_file(str(entry / "statistics.safetensors"))
        usable = read_json(entry / "usable.json")
        return {lang: LanguageStatistics(usable[lang], *(tensors[f"{lang}.{name}"] for name in _TENSORS))
                for lang in held_out.languages}
    batches = language_batches(model.tokenizer, held_out)
    result = {lang: read_statistics(model, lang_batches, hook, unit_values, config, progress=progress,
                                    description=f"{hook} statistics ({lang})")
              for lang, lang_batches in batches.items()}
    save_file({f"{lang}.{name}": getattr(stats, name).contiguous() for lang, stats in result.items()
               for name in _TENSORS}, str(entry.prepare() / "statistics.safetensors"))
    atomic_write_json(entry / "usable.json", {lang: stats.usable for lang, stats in result.items()})
    entry.commit()
    return result


_TENSORS = ("fired", "reservoir", "top_rows", "top_peaks")


def clean_cross_entropy(model: Model, held_out: AblationConfig) -> dict[str, float]:
    """Language -> token-weighted held-out CE without any edit (cached per model and held-out text)."""
    entry = Store().entry(HELD_OUT_CE, {"model": model_key(model), "held_out": asdict(held_out)},
                          scope=model_key(model), label=digest(asdict(held_out), 8))
    if entry.ready():
        return read_json(entry / "ce.json")
    batches = language_batches(model.tokenizer, held_out)
    ce = {lang: token_cross_entropy(model, lang_batches, exclude_bos=False) for lang, lang_batches in batches.items()}
    atomic_write_json(entry.prepare() / "ce.json", ce)
    entry.commit()
    return ce


def rows_of(batches: Sequence[TokenBatch], rows: Sequence[int]) -> TokenBatch:
    """The texts at ``rows`` (numbers in ``batches`` concatenated) as one right-padded batch."""
    texts = [ids[mask.bool()] for batch in batches for ids, mask in zip(batch.tokens, batch.attention_mask,
                                                                          strict=True)]
    chosen = [texts[row] for row in rows]
    width = max(len(ids) for ids in chosen)
    tokens = torch.zeros(len(chosen), width, dtype=chosen[0].dtype)
    mask = torch.zeros(len(chosen), width, dtype=torch.long)
    for index, ids in enumerate(chosen):
        tokens[index, :len(ids)], mask[index, :len(ids)] = ids, 1
    return TokenBatch(tokens, mask, ["context"] * len(chosen))
