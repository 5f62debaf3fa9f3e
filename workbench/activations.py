"""Streaming activation statistics at any set of sites, grouped by a label (usually a language).

One harvest serves every neuron- and direction-finding method: per site, per group and per unit it keeps the
token count, mean and variance (Chan's parallel update in float64), ``P(x > 0)``, min and max, and a histogram on
fixed bin edges from which quantiles and cross-group CDFs are read. Memory does not grow with the number of tokens.

Quantiles are a stated approximation: bins are uniform in ``asinh(x / scale)`` (``scale`` = 0.05 by default), so a
bin spans ~4.6% of ``|x|`` for large values and ~2.3e-3 near zero; values are interpolated linearly inside a
bin. The edges are the same for every unit and group of a site, so ``P(group B > quantile q of group A)`` is one
lookup.

Padding positions are always excluded; the BOS position is excluded unless ``HarvestConfig.exclude_bos`` is
False. The forward pass stops after the last block a requested site needs, so no logits are ever computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench.artifacts import atomic_write_json, load_tensors, read_json, save_tensors
from workbench.backends import Model, forward_to
from workbench.errors import WorkbenchError
from workbench.histograms import bin_counts
from workbench.models import model_metadata
from workbench.sites import Site, resolve_site

_TOKENIZE_CHUNK = 256


class HarvestError(WorkbenchError):
    """Bad input to a harvest (no tokens, unknown group or site, mismatched shapes)."""


@dataclass(frozen=True)
class HarvestConfig:
    """How activations are turned into statistics."""

    exclude_bos: bool = True
    """Drop positions holding the BOS token (its activations are outliers shared by every language)."""
    histogram_kinds: tuple[str, ...] = ()
    """Site kinds that also keep per-unit histograms (quantiles, cross-group CDFs), e.g. ``("mlp_post",)``.
    Off by default: a histogram costs ~3x the other statistics of a site together."""
    histogram_bins: int = 512
    """Number of bins between ``-max_abs`` and ``+max_abs`` (two more catch values outside)."""
    histogram_scale: float = 0.05
    """``s`` in the asinh bin spacing: below ~s the bins are uniform in x, above it uniform in log|x|."""
    histogram_max_abs: float = 1e4
    """Largest |x| inside the binned range; values beyond land in the outer bins (min/max stay exact)."""
    sample_tokens: int = 0
    """Also keep a uniform random sample (reservoir) of up to this many token activations per site and group,
    for methods that need individual points (PCA, LDA, probes). 0 keeps none."""
    sample_seed: int = 0
    """Seed of the reservoir sampling."""

    def __post_init__(self) -> None:
        if self.sample_tokens < 0:
            raise HarvestError(f"sample_tokens must be >= 0, got {self.sample_tokens}")
        if self.histogram_bins < 8:
            raise HarvestError(f"histogram_bins must be >= 8, got {self.histogram_bins}")
        if self.histogram_scale <= 0 or self.histogram_max_abs <= self.histogram_scale:
            raise HarvestError("need 0 < histogram_scale < histogram_max_abs")

    def keeps_histogram(self, site: Site) -> bool:
        return site.kind in self.histogram_kinds

    def bin_edges(self) -> Float[Tensor, " edges"]:
        """The ``histogram_bins + 1`` edges of the inner bins, in activation units."""
        limit = torch.asinh(torch.tensor(self.histogram_max_abs / self.histogram_scale, dtype=torch.float64))
        grid = torch.linspace(-limit.item(), limit.item(), self.histogram_bins + 1, dtype=torch.float64)
        return torch.sinh(grid) * self.histogram_scale


@dataclass
class TokenBatch:
    """A batch of token sequences with one group label per sequence."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    labels: list[str]

    def __post_init__(self) -> None:
        if self.tokens.shape != self.attention_mask.shape:
            raise HarvestError(f"tokens {tuple(self.tokens.shape)} and attention_mask "
                               f"{tuple(self.attention_mask.shape)} differ in shape")
        if len(self.labels) != self.tokens.shape[0]:
            raise HarvestError(f"{len(self.labels)} labels for {self.tokens.shape[0]} sequences")


def batch_texts(tokenizer: Any, texts_by_group: dict[str, Sequence[str]], *, batch_size: int = 8,
                max_length: int = 128) -> list[TokenBatch]:
    """Tokenise texts (BOS prepended, right-padded, truncated) into length-sorted single-group batches.

    Sorting by length within a group minimises padding; batches never mix groups, so each forward pass
    serves one group.
    """
    strings = [group for group, texts in texts_by_group.items() if isinstance(texts, str)]
    if strings:
        raise HarvestError(f"group(s) {strings} map to a single string; pass a list of texts per group, e.g. "
                           f"{{{strings[0]!r}: [{texts_by_group[strings[0]][:20]!r}]}}")
    empty = [group for group, texts in texts_by_group.items() if not texts]
    if not texts_by_group or empty:
        raise HarvestError(f"no texts to harvest for group(s) {empty or '(none given)'}; pass a non-empty list "
                           "of strings per group")
    batches = []
    for group, texts in texts_by_group.items():
        ordered = sorted(texts, key=len)
        for start in range(0, len(ordered), batch_size):
            encoded = tokenizer(list(ordered[start:start + batch_size]), return_tensors="pt", padding=True,
                                truncation=True, max_length=max_length, padding_side="right")
            batches.append(TokenBatch(encoded["input_ids"], encoded["attention_mask"],
                                      [group] * encoded["input_ids"].shape[0]))
    return batches


def texts_with_budget(tokenizer: Any, texts: Sequence[str], n_tokens: int, max_length: int,
                      exclude_bos: bool = True) -> tuple[list[str], int]:
    """The first texts whose usable tokens (after truncation to ``max_length``, BOS excluded if asked) reach
    ``n_tokens``, and how many usable tokens they hold."""
    bos = getattr(tokenizer, "bos_token_id", None)
    chosen: list[str] = []
    total = 0
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = list(texts[start:start + _TOKENIZE_CHUNK])
        for text, ids in zip(chunk, tokenizer(chunk, truncation=True, max_length=max_length)["input_ids"],
                             strict=True):
            if total >= n_tokens:
                return chosen, total
            chosen.append(text)
            total += len(ids) - int(exclude_bos and bool(ids) and ids[0] == bos)
    return chosen, total


class _UnitAccumulator:
    """Running statistics of one (site, group): a stream of (n, d) activation rows."""

    def __init__(self, width: int, bin_edges: Tensor | None, config: HarvestConfig):
        self.count = 0
        self.mean = torch.zeros(width, dtype=torch.float64)
        self.m2 = torch.zeros(width, dtype=torch.float64)
        self.positive = torch.zeros(width, dtype=torch.int64)
        self.minimum = torch.full((width,), float("inf"))
        self.maximum = torch.full((width,), float("-inf"))
        self.histogram = None if bin_edges is None else torch.zeros(width, len(bin_edges) + 1, dtype=torch.int32)
        self.samples = torch.empty(0, width)
        self._generator = torch.Generator().manual_seed(config.sample_seed)
        self._config = config

    def _sample(self, rows: Float[Tensor, "n d"]) -> None:
        """Reservoir sampling (Algorithm R), vectorised: row i of the stream replaces slot j ~ U[0, i) if j < k."""
        capacity, seen = self._config.sample_tokens, self.count - rows.shape[0]
        free = max(0, min(capacity - len(self.samples), rows.shape[0]))
        self.samples = torch.cat([self.samples, rows[:free]])
        rest = rows[free:]
        if len(rest):
            stream_index = torch.arange(seen + free + 1, seen + rows.shape[0] + 1)
            slots = (torch.rand(len(rest), generator=self._generator) * stream_index).long()
            keep = slots < capacity
            self.samples[slots[keep]] = rest[keep]  # later rows win on repeated slots, as in the sequential loop

    def update(self, rows: Float[Tensor, "n d"]) -> None:
        n = rows.shape[0]
        if n == 0:
            return
        rows = rows.detach().float().cpu()
        # Plain sums and amin/amax are several times faster on CPU than var_mean/aminmax (measured).
        batch_mean = rows.sum(0) / n
        batch_m2 = (rows - batch_mean).pow_(2).sum(0).double()  # in place: one 8 MB temporary fewer per site
        batch_mean = batch_mean.double()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += batch_m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.positive += (rows > 0).sum(0, dtype=torch.int32)
        self.minimum = torch.minimum(self.minimum, rows.amin(0))
        self.maximum = torch.maximum(self.maximum, rows.amax(0))
        if self.histogram is not None:
            config = self._config
            self.histogram += bin_counts(rows, config.histogram_bins, config.histogram_max_abs,
                                         config.histogram_scale).to(torch.int32)
        if self._config.sample_tokens:
            self._sample(rows)


@dataclass
class ActivationStats:
    """Per-site, per-group, per-unit statistics from :func:`harvest`. Tensors are CPU float32 unless stated."""

    sites: list[Site]
    groups: list[str]
    config: HarvestConfig
    tensors: dict[str, Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    moments: dict[str, Tensor] = field(default_factory=dict)
    """The exact running moments behind ``tensors``, per ``{hook}/{group}/``: ``count`` and ``positive`` (int64),
    ``mean`` and ``m2`` (float64, the sum of squared deviations). Kept in memory by :func:`harvest` so statistics
    from several processes combine exactly (:func:`workbench.distributed.all_reduce_stats`); not saved."""

    # ------------------------------------------------------------------ access
    def _get(self, stat: str, site: Site | str, group: str) -> Tensor:
        site = Site.parse(site) if isinstance(site, str) else site
        if site not in self.sites:
            raise HarvestError(f"site {site} was not harvested; harvested sites: {', '.join(map(str, self.sites))}")
        if group not in self.groups:
            raise HarvestError(f"group {group!r} was not harvested; harvested groups: {', '.join(self.groups)}")
        key = f"{site.hook_name}/{group}/{stat}"
        if key not in self.tensors:
            raise HarvestError(f"no {stat!r} kept for {site}; histograms are kept for kinds "
                               f"{self.config.histogram_kinds} (HarvestConfig.histogram_kinds)")
        return self.tensors[key]

    def count(self, site: Site | str, group: str) -> int:
        """Number of tokens that contributed (padding and, by default, BOS excluded)."""
        return int(self._get("count", site, group).item())

    def mean(self, site: Site | str, group: str) -> Float[Tensor, " d"]:
        return self._get("mean", site, group)

    def var(self, site: Site | str, group: str) -> Float[Tensor, " d"]:
        """Population variance over tokens."""
        return self._get("var", site, group)

    def std(self, site: Site | str, group: str) -> Float[Tensor, " d"]:
        return self.var(site, group).sqrt()

    def frac_positive(self, site: Site | str, group: str) -> Float[Tensor, " d"]:
        """P(x > 0) per unit: for ``mlp_pre`` of a gated MLP, the activation probability LAPE uses."""
        return self._get("frac_positive", site, group)

    def minimum(self, site: Site | str, group: str) -> Float[Tensor, " d"]:
        return self._get("min", site, group)

    def maximum(self, site: Site | str, group: str) -> Float[Tensor, " d"]:
        return self._get("max", site, group)

    def histogram(self, site: Site | str, group: str) -> Int[Tensor, "d bins"]:
        """Per-unit counts: underflow, ``histogram_bins`` inner bins on :meth:`HarvestConfig.bin_edges`, overflow."""
        return self._get("histogram", site, group)

    def quantile(self, site: Site | str, group: str, q: float) -> Float[Tensor, " d"]:
        """Approximate per-unit quantile (see the module docstring for the error bound)."""
        if not 0.0 <= q <= 1.0:
            raise HarvestError(f"quantile q must be in [0, 1], got {q}")
        return histogram_quantile(self.histogram(site, group), self.config.bin_edges(), q,
                                  self.minimum(site, group), self.maximum(site, group))

    def cdf(self, site: Site | str, group: str, values: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
        """Approximate per-unit ``P(x <= values[unit])`` for this group's activations."""
        return histogram_cdf(self.histogram(site, group), self.config.bin_edges(), values,
                             self.minimum(site, group), self.maximum(site, group))

    def samples(self, site: Site | str, group: str) -> Float[Tensor, "n d"]:
        """A uniform random sample of this group's token activations (``HarvestConfig.sample_tokens`` rows at most)."""
        if not self.config.sample_tokens:
            raise HarvestError("no token samples kept; harvest with HarvestConfig(sample_tokens=N)")
        return self._get("samples", site, group)

    def stack(self, stat: str, kind: str, groups: Sequence[str] | None = None) -> Float[Tensor, "layer unit group"]:
        """One statistic for every harvested layer of a site kind, stacked as (layer, unit, group)."""
        groups = list(groups or self.groups)
        layers = sorted(site.layer for site in self.sites if site.kind == kind)
        if not layers:
            raise HarvestError(f"no sites of kind {kind!r} harvested; kinds present: "
                               f"{sorted({site.kind for site in self.sites})}")
        per_layer = [torch.stack([self._get(stat, Site(layer, kind), g) for g in groups], dim=-1) for layer in layers]
        return torch.stack(per_layer).float()

    @property
    def layers(self) -> list[int]:
        return sorted({site.layer for site in self.sites})

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``stats.safetensors`` and ``stats.json`` (config, sites, groups, model metadata) atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(self.tensors, directory / "stats.safetensors")
        atomic_write_json(directory / "stats.json", {
            "sites": [site.hook_name for site in self.sites], "groups": self.groups,
            "config": asdict(self.config), "metadata": self.metadata,
        })
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ActivationStats:
        directory = Path(directory)
        info = read_json(directory / "stats.json")
        config_fields = info["config"]
        config_fields["histogram_kinds"] = tuple(config_fields["histogram_kinds"])
        return cls(sites=[Site.parse(name) for name in info["sites"]], groups=info["groups"],
                   config=HarvestConfig(**config_fields), tensors=load_tensors(directory / "stats.safetensors"),
                   metadata=info["metadata"])


def _bin_cumulative(histogram: Int[Tensor, "d bins"]) -> tuple[Float[Tensor, "d bins"], Float[Tensor, " d"]]:
    counts = histogram.double()
    return counts.cumsum(-1), counts.sum(-1)


def _bin_bounds(edges: Tensor, minimum: Tensor, maximum: Tensor) -> tuple[Tensor, Tensor]:
    """Lower and upper bound of every bin (outer bins bounded by the exact min/max) per unit."""
    width = minimum.shape[0]
    inner_low = edges[:-1].expand(width, -1)
    inner_high = edges[1:].expand(width, -1)
    low = torch.cat([minimum.double().unsqueeze(-1), inner_low, edges[-1:].expand(width, 1)], dim=-1)
    high = torch.cat([edges[:1].expand(width, 1), inner_high, maximum.double().unsqueeze(-1)], dim=-1)
    low = torch.maximum(torch.minimum(low, maximum.double().unsqueeze(-1)), minimum.double().unsqueeze(-1))
    high = torch.minimum(torch.maximum(high, minimum.double().unsqueeze(-1)), maximum.double().unsqueeze(-1))
    return low, high


def _order_statistic(cumulative: Tensor, counts: Tensor, low: Tensor, high: Tensor,
                     rank: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    """Estimate the ``rank``-th smallest value (1-based, integer-valued) per unit, spreading a bin's values evenly."""
    bin_index = torch.searchsorted(cumulative, rank.unsqueeze(-1)).clamp_(max=counts.shape[-1] - 1)
    in_bin = torch.gather(counts, -1, bin_index)
    before = torch.gather(cumulative, -1, bin_index) - in_bin
    fraction = ((rank.unsqueeze(-1) - before - 0.5) / in_bin.clamp_min(1)).clamp(0, 1)
    bin_low = torch.gather(low, -1, bin_index)
    return (bin_low + fraction * (torch.gather(high, -1, bin_index) - bin_low)).squeeze(-1)


def histogram_quantile(histogram: Int[Tensor, "d bins"], edges: Float[Tensor, " edges"], q: float,
                       minimum: Float[Tensor, " d"], maximum: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    """Per-unit quantile from binned counts, with ``torch.quantile``'s linear interpolation between order
    statistics; each order statistic is placed inside its bin, so the error is at most one bin width."""
    counts = histogram.double()
    cumulative, total = _bin_cumulative(histogram)
    if (total == 0).any():
        raise HarvestError("quantile of a unit with no observations")
    rank = q * (total - 1) + 1
    lower_rank, upper_rank = rank.floor(), rank.ceil()
    low, high = _bin_bounds(edges, minimum, maximum)
    lower = _order_statistic(cumulative, counts, low, high, lower_rank)
    upper = _order_statistic(cumulative, counts, low, high, upper_rank)
    return (lower + (rank - lower_rank) * (upper - lower)).float()


def histogram_cdf(histogram: Int[Tensor, "d bins"], edges: Float[Tensor, " edges"], values: Float[Tensor, " d"],
                  minimum: Float[Tensor, " d"], maximum: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    """Per-unit ``P(x <= value)`` from binned counts, linear inside the bin containing the value."""
    cumulative, total = _bin_cumulative(histogram)
    low, high = _bin_bounds(edges, minimum, maximum)
    values = values.double().unsqueeze(-1)
    bin_index = torch.searchsorted(edges.expand(histogram.shape[0], -1).contiguous(), values, right=True)
    bin_index = bin_index.clamp_(max=histogram.shape[-1] - 1)
    below = torch.gather(cumulative, -1, bin_index) - torch.gather(histogram.double(), -1, bin_index)
    span = (torch.gather(high, -1, bin_index) - torch.gather(low, -1, bin_index)).clamp_min(1e-12)
    fraction = ((values - torch.gather(low, -1, bin_index)) / span).clamp(0, 1)
    mass = below + fraction * torch.gather(histogram.double(), -1, bin_index)
    return (mass.squeeze(-1) / total.clamp_min(1)).float()


def _position_mask(batch: TokenBatch, bos_token_id: int | None, exclude_bos: bool) -> Bool[Tensor, "batch pos"]:
    mask = batch.attention_mask.bool()
    if exclude_bos and bos_token_id is not None:
        mask &= batch.tokens != bos_token_id
    return mask


def harvest(model: Model, batches: Iterable[TokenBatch], sites: Sequence[Site | str], *,
            config: HarvestConfig | None = None, bos_token_id: int | None = None, progress: bool = True,
            total: int | None = None, description: str = "harvest") -> ActivationStats:
    """Stream ``batches`` through ``model`` and accumulate statistics at ``sites``, grouped by batch labels.

    Works with either backend of :func:`workbench.models.load_model` (the bridge is the fast one). The forward
    pass stops after the deepest block that a site needs. ``bos_token_id`` defaults to the model tokenizer's.
    """
    config = config or HarvestConfig()
    resolved = sorted({resolve_site(model, site) for site in sites})
    if not resolved:
        raise HarvestError("no sites given; pass e.g. ['blocks.6.hook_resid_post']")
    edges = config.bin_edges()
    accumulators: dict[tuple[Site, str], _UnitAccumulator] = {}
    if bos_token_id is None:
        bos_token_id = getattr(model.tokenizer, "bos_token_id", None)
    current: dict[str, Any] = {}

    def accumulate(activation: Float[Tensor, "batch pos d"], hook: Any, site: Site) -> None:
        for group, group_mask in current["group_masks"].items():
            key = (site, group)
            if key not in accumulators:
                accumulators[key] = _UnitAccumulator(activation.shape[-1],
                                                     edges if config.keeps_histogram(site) else None, config)
            accumulators[key].update(activation[group_mask.to(activation.device)])

    # Bind each site explicitly: the bridge reports aliased hooks under their internal names.
    fwd_hooks = [(site.hook_name, partial(accumulate, site=site)) for site in resolved]
    n_tokens = 0
    iterator = tqdm(batches, desc=description, total=total, disable=not progress, unit="batch")
    with torch.inference_mode():
        for index, batch in enumerate(iterator):
            mask = _position_mask(batch, bos_token_id, config.exclude_bos)
            current["group_masks"] = _group_masks(mask, batch.labels)
            n_tokens += int(mask.sum())
            forward_to(model, batch.tokens, batch.attention_mask, fwd_hooks)
            _check_finite(accumulators, index)
    if not accumulators or n_tokens == 0:
        raise HarvestError("the batches held no usable tokens (empty input, or only padding/BOS)")
    groups = sorted({group for _, group in accumulators})
    return ActivationStats(sites=resolved, groups=groups, config=config, tensors=_finalise(accumulators),
                           metadata={"model": model_metadata(model), "n_tokens": n_tokens},
                           moments=_moments(accumulators))


def _check_finite(accumulators: dict[tuple[Site, str], _UnitAccumulator], batch_index: int) -> None:
    """A NaN or inf activation makes its running mean non-finite: name the first site it reached."""
    for (site, group), accumulator in accumulators.items():
        if not torch.isfinite(accumulator.mean).all():
            units = (~torch.isfinite(accumulator.mean)).nonzero()[:, 0]
            raise HarvestError(f"NaN or inf activations at {site.hook_name} (layer {site.layer}) in batch "
                               f"{batch_index} ({group!r} text), first at unit {int(units[0])} of {len(units)}: the "
                               "model or a hook produces non-finite values; the statistics would be meaningless")


def _group_masks(mask: Bool[Tensor, "batch pos"], labels: list[str]) -> dict[str, Bool[Tensor, "batch pos"]]:
    if len(set(labels)) == 1:
        return {labels[0]: mask}
    rows = {label: torch.tensor([lab == label for lab in labels]) for label in dict.fromkeys(labels)}
    return {label: mask & row.unsqueeze(-1) for label, row in rows.items()}


def moment_statistics(count: int, mean: Float[Tensor, " d"], m2: Float[Tensor, " d"], positive: Int[Tensor, " d"]
                      ) -> dict[str, Tensor]:
    """The saved form of exact running moments: ``count`` (int64), ``mean``, population ``var`` and
    ``frac_positive`` (float32)."""
    return {"count": torch.tensor([count], dtype=torch.int64), "mean": mean.float(),
            "var": (m2 / max(count, 1)).float(), "frac_positive": (positive.double() / max(count, 1)).float()}


def _moments(accumulators: dict[tuple[Site, str], _UnitAccumulator]) -> dict[str, Tensor]:
    moments: dict[str, Tensor] = {}
    for (site, group), acc in accumulators.items():
        prefix = f"{site.hook_name}/{group}"
        moments.update({f"{prefix}/count": torch.tensor([acc.count], dtype=torch.int64), f"{prefix}/mean": acc.mean,
                        f"{prefix}/m2": acc.m2, f"{prefix}/positive": acc.positive})
    return moments


def _finalise(accumulators: dict[tuple[Site, str], _UnitAccumulator]) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    for (site, group), acc in accumulators.items():
        prefix = f"{site.hook_name}/{group}"
        statistics = moment_statistics(acc.count, acc.mean, acc.m2, acc.positive)
        tensors.update({f"{prefix}/{name}": value for name, value in statistics.items()})
        tensors[f"{prefix}/min"] = acc.minimum
        tensors[f"{prefix}/max"] = acc.maximum
        if acc.histogram is not None:
            tensors[f"{prefix}/histogram"] = acc.histogram
        if len(acc.samples):
            tensors[f"{prefix}/samples"] = acc.samples
    return tensors
