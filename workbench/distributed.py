"""Data-parallel harvesting: every process of a ``torchrun`` job harvests its shard of the corpus, then the
statistics are combined exactly over ``torch.distributed`` (gloo on CPU, nccl on GPUs) and rank 0 saves them.

    torchrun --nproc_per_node 4 -m workbench.cli harvest --model M --langs en,hi --sites mlp_pre --kinds mlp_pre \\
        --out harvests/M
    stats = ActivationStats.load("harvests/M")

Every rank selects the same texts (each language's split in corpus order up to the token budget) and batches them
the same way; rank ``r`` of ``K`` harvests batches ``r, r + K, ...``. The combination is exact: counts and
``P(x > 0)`` counts are summed as integers, means and variances are combined from the float64 running moments
by Chan's formula in rank order (so every rank gets the identical result), min / max by MIN / MAX reductions,
histograms summed. The token samples (reservoirs) are merged into a uniform sample of the union: how many rows
each rank contributes is drawn from the multivariate hypergeometric distribution of the ranks' token counts, and
that many rows are taken at random from the rank's own uniform reservoir (each rank samples with its own seed,
``sample_seed + rank``, so the reservoirs are independent).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from jaxtyping import Float
from torch import Tensor

from workbench import corpus
from workbench.activations import (
    ActivationStats,
    HarvestConfig,
    HarvestError,
    batch_texts,
    harvest,
    moment_statistics,
    texts_with_budget,
)
from workbench.backends import Model
from workbench.inputs import positive, unique
from workbench.languages import get_language
from workbench.models import load_model, model_metadata
from workbench.sites import SITE_KINDS, Site, resolve_site, sites_for

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a ``torchrun`` job; a plain run is rank 0 of 1."""

    rank: int = 0
    """Global rank, 0-based."""
    world_size: int = 1
    """Processes in the job (over every node)."""
    local_rank: int = 0
    """Rank on this node: the GPU this process uses."""


def torchrun_launch(environ: Mapping[str, str] = os.environ) -> Launch:
    """The job ``torchrun`` describes in ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; one process when unset."""
    if "WORLD_SIZE" not in environ:
        return Launch()
    try:
        world_size, rank, local_rank = (int(environ[name]) for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    except (KeyError, ValueError):
        found = {name: environ.get(name) for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        raise HarvestError(f"incomplete torchrun environment {found}: WORLD_SIZE, RANK and LOCAL_RANK must all be "
                           "integers; launch with torchrun --nproc_per_node K -m workbench.cli harvest ...") from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise HarvestError(f"torchrun environment has RANK={rank}, LOCAL_RANK={local_rank} for WORLD_SIZE="
                           f"{world_size}; need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0")
    return Launch(rank, world_size, local_rank)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s share of ``items``: every ``world_size``-th item from position ``rank``. The shards of all
    ranks are disjoint and cover ``items``; neighbouring items (similar-length batches) go to different ranks."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise HarvestError(f"cannot shard for rank {rank} of {world_size}: need world_size >= 1 and "
                           "0 <= rank < world_size")
    return list(items[rank::world_size])


def merge_moments(parts: Sequence[tuple[int, Float[Tensor, " d"], Float[Tensor, " d"]]]
                  ) -> tuple[int, Float[Tensor, " d"], Float[Tensor, " d"]]:
    """(count, mean, sum of squared deviations) of the union of several parts, by Chan's parallel update in float64,
    in the order given. Parts with count 0 contribute nothing."""
    count = 0
    mean = m2 = torch.zeros(parts[0][1].shape[0], dtype=torch.float64)
    for part_count, part_mean, part_m2 in parts:
        if part_count == 0:
            continue
        total = count + part_count
        delta = part_mean.double() - mean
        mean = mean + delta * (part_count / total)
        m2 = m2 + part_m2.double() + delta**2 * (count * part_count / total)
        count = total
    return count, mean, m2


def merge_reservoirs(samples: Sequence[Float[Tensor, "_ d"]], counts: Sequence[int], capacity: int, seed: int
                     ) -> Float[Tensor, "sample d"]:
    """A uniform sample (without replacement) of ``min(capacity, sum(counts))`` rows of the union of several
    streams, from each stream's uniform reservoir (``samples[i]``: ``min(capacity, counts[i])`` rows of a stream
    of ``counts[i]``). How many rows each stream gives is multivariate hypergeometric; they are a random subset of
    its reservoir. The same ``seed`` gives the same result on every rank."""
    if len(samples) != len(counts) or any(len(s) != min(capacity, n) for s, n in zip(samples, counts, strict=True)):
        raise HarvestError(f"reservoirs of {[len(s) for s in samples]} rows do not fit streams of {list(counts)} "
                           f"tokens at capacity {capacity}")
    taken = np.random.default_rng(seed).multivariate_hypergeometric(np.asarray(counts, dtype=np.int64),
                                                                     min(capacity, sum(counts)))
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([sample[torch.randperm(len(sample), generator=generator)[:int(n)]]
                      for sample, n in zip(samples, taken, strict=True)])


# --------------------------------------------------------------------------------------------- the all-reduce
def _keys(stats: ActivationStats) -> list[tuple[Site, str]]:
    return [(site, group) for site in stats.sites for group in stats.groups
            if f"{site.hook_name}/{group}/count" in stats.tensors]


def _summary(stats: ActivationStats) -> dict[str, Any]:
    """What the ranks agree on before combining: per (site, group) its width and histogram bins (0: none)."""
    layout = {}
    for site, group in _keys(stats):
        prefix = f"{site.hook_name}/{group}"
        if f"{prefix}/m2" not in stats.moments:
            raise HarvestError(f"no exact moments for {prefix}: combine the statistics harvest() returned, not ones "
                               "loaded from disk (saved means and variances are rounded to float32)")
        histogram = stats.tensors.get(f"{prefix}/histogram")
        layout[(site.hook_name, group)] = (stats.tensors[f"{prefix}/mean"].shape[0],
                                           0 if histogram is None else histogram.shape[1])
    return {"layout": layout, "config": asdict(stats.config), "sites": [site.hook_name for site in stats.sites],
            "metadata": stats.metadata}


def _agree(summaries: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """The union of every rank's (site, group) layout, after checking the ranks harvested alike."""
    reference = {**summaries[0]["config"], "sample_seed": None}
    for rank, summary in enumerate(summaries):
        if {**summary["config"], "sample_seed": None} != reference:
            raise HarvestError(f"rank {rank} harvested with {summary['config']}, rank 0 with "
                               f"{summaries[0]['config']}: every rank must use the same HarvestConfig")
    seeds = [summary["config"]["sample_seed"] for summary in summaries]
    if summaries[0]["config"]["sample_tokens"] and len(set(seeds)) < len(seeds):
        raise HarvestError(f"the ranks sampled tokens with seeds {seeds}: equal seeds make the reservoirs "
                           "correlated; harvest rank r with sample_seed + r")
    layout: dict[tuple[str, str], tuple[int, int]] = {}
    for rank, summary in enumerate(summaries):
        for key, shape in summary["layout"].items():
            if layout.setdefault(key, shape) != shape:
                raise HarvestError(f"{key[0]} [{key[1]}] has (width, bins) {shape} on rank {rank} but {layout[key]} "
                                   "on another: every rank must harvest the same model")
    return layout


def _gather(tensor: Tensor, device: torch.device) -> list[Tensor]:
    local = tensor.to(device)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [part.cpu() for part in parts]


def _reduce(tensor: Tensor, op: Any, device: torch.device) -> Tensor:
    local = tensor.to(device)
    dist.all_reduce(local, op=op)
    return local.cpu()


def _combine(stats: ActivationStats, prefix: str, width: int, bins: int, config: HarvestConfig,
             device: torch.device) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One (site, group) combined over the ranks: its tensors and moments. A rank that never saw it adds nothing."""
    local = {"count": torch.zeros(1, dtype=torch.int64), "positive": torch.zeros(width, dtype=torch.int64),
             "mean": torch.zeros(width, dtype=torch.float64), "m2": torch.zeros(width, dtype=torch.float64)}
    local.update({name: stats.moments[f"{prefix}/{name}"] for name in local if f"{prefix}/{name}" in stats.moments})
    samples = stats.tensors.get(f"{prefix}/samples", torch.empty(0, width))
    integers = _gather(torch.cat([local["count"], torch.tensor([len(samples)]), local["positive"]]), device)
    floats = _gather(torch.cat([local["mean"], local["m2"]]), device)
    counts = [int(part[0]) for part in integers]
    total, mean, m2 = merge_moments([(n, part[:width], part[width:]) for n, part in zip(counts, floats, strict=True)])
    positive = torch.stack([part[2:] for part in integers]).sum(0)
    tensors = {f"{prefix}/{name}": value for name, value in moment_statistics(total, mean, m2, positive).items()}
    for name, identity, op in (("min", float("inf"), dist.ReduceOp.MIN), ("max", float("-inf"), dist.ReduceOp.MAX)):
        tensors[f"{prefix}/{name}"] = _reduce(stats.tensors.get(f"{prefix}/{name}", torch.full((width,), identity)),
                                              op, device)
    if bins:
        histogram = stats.tensors.get(f"{prefix}/histogram", torch.zeros(width, bins, dtype=torch.int32))
        tensors[f"{prefix}/histogram"] = _reduce(histogram, dist.ReduceOp.SUM, device)
    if config.sample_tokens:
        padded = torch.zeros(config.sample_tokens, width)
        padded[:len(samples)] = samples
        rows = [int(part[1]) for part in integers]
        reservoirs = [part[:n] for part, n in zip(_gather(padded, device), rows, strict=True)]
        merged = merge_reservoirs(reservoirs, counts, config.sample_tokens, config.sample_seed)
        if len(merged):
            tensors[f"{prefix}/samples"] = merged
    moments = {f"{prefix}/count": torch.tensor([total], dtype=torch.int64), f"{prefix}/mean": mean,
               f"{prefix}/m2": m2, f"{prefix}/positive": positive}
    return tensors, moments


def all_reduce_stats(stats: ActivationStats) -> ActivationStats:
    """Every rank's statistics combined exactly (see the module docstring); every rank gets the same result.

    Call it on every rank of an initialised process group with what :func:`workbench.activations.harvest`
    returned there (a rank that harvested nothing passes statistics with no groups). The result's config is rank
    0's; its metadata is rank 0's with ``n_tokens`` summed and ``world_size`` added.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise HarvestError("all_reduce_stats needs an initialised torch.distributed process group: run under "
                           "torchrun, or call torch.distributed.init_process_group first")
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    summaries: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(summaries, _summary(stats))
    layout = _agree(summaries)
    config = replace(stats.config, sample_seed=summaries[0]["config"]["sample_seed"])
    tensors: dict[str, Tensor] = {}
    moments: dict[str, Tensor] = {}
    keys = sorted((Site.parse(hook), group) for hook, group in layout)
    for site, group in keys:
        width, bins = layout[(site.hook_name, group)]
        part_tensors, part_moments = _combine(stats, f"{site.hook_name}/{group}", width, bins, config, device)
        tensors.update(part_tensors)
        moments.update(part_moments)
    sites = sorted({Site.parse(hook) for summary in summaries for hook in summary["sites"]})
    metadata = {**summaries[0]["metadata"], "world_size": len(summaries),
                "n_tokens": sum(int(summary["metadata"].get("n_tokens", 0)) for summary in summaries)}
    return ActivationStats(sites=sites, groups=sorted({group for _, group in keys}), config=config, tensors=tensors,
                           metadata=metadata, moments=moments)


# --------------------------------------------------------------------------------------------- the corpus job
def _site_spec(text: str) -> Site | str:
    """``mlp_pre`` (that kind at every layer), or one site: ``6.resid_post`` / ``blocks.6.hook_resid_post``."""
    text = text.strip()
    return text if text in SITE_KINDS else Site.parse(text)


def _resolve_sites(model: Model, specs: Sequence[Site | str]) -> list[Site]:
    resolved = [site for spec in specs
                for site in (sites_for(model, spec) if isinstance(spec, str) else [resolve_site(model, spec)])]
    return sorted(set(resolved))


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise HarvestError(f"--out {out} is an existing file; give a directory (new, empty, or a previous harvest)")
    if out.is_dir() and any(out.iterdir()) and not (out / "stats.json").is_file():
        raise HarvestError(f"--out {out} is a directory holding other files; give a new or empty directory, or a "
                           "previous harvest (one with stats.json) to replace")


def _corpus_texts(languages: Sequence[str], split: str) -> dict[str, list[str]]:
    if split not in corpus.SPLITS:
        raise HarvestError(f"unknown split {split!r}; use one of {', '.join(corpus.SPLITS)}")
    codes = [get_language(code.strip()).code for code in unique(languages, "--langs")]
    if not codes:
        raise HarvestError("no languages given; pass e.g. --langs en,hi")
    texts = {code: [row.text for row in corpus.monolingual(code, split=split) if row.text.strip()] for code in codes}
    empty = [code for code, values in texts.items() if not values]
    if empty:
        raise HarvestError(f"the {split} split holds no text for {', '.join(empty)}; use another split or language")
    return texts


def _save(stats: ActivationStats, out: Path) -> None:
    """Write into a fresh sibling directory, then move it into place: a reader never sees a half-written harvest."""
    staging, previous = (out.parent / f".{out.name}.{os.getpid()}.{part}" for part in ("partial", "previous"))
    for leftover in (staging, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        stats.save(staging)
        if out.is_dir() and any(out.iterdir()):
            os.replace(out, previous)
            os.replace(staging, out)
            shutil.rmtree(previous)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _process_group(launch: Launch) -> Iterator[Launch]:
    """Initialise the default process group for a job of several processes (nccl with CUDA, else gloo) and destroy
    it at the end; a group the caller already initialised is used and left alone."""
    if dist.is_available() and dist.is_initialized():
        yield Launch(dist.get_rank(), dist.get_world_size(), launch.local_rank)
        return
    if launch.world_size == 1:
        yield launch
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(launch.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield launch
    finally:
        dist.destroy_process_group()


def _harvest_shard(model_name: str, backend: str, dtype: torch.dtype, specs: Sequence[Site | str],
                   texts: dict[str, list[str]], config: HarvestConfig, launch: Launch, *, n_tokens: int,
                   max_length: int, batch_size: int, progress: bool) -> tuple[ActivationStats, dict[str, int]]:
    """This rank's statistics and the number of texts each language's budget chose (the same on every rank): load
    the model, budget every language's texts, harvest this rank's batches."""
    device = f"cuda:{launch.local_rank}" if launch.world_size > 1 and torch.cuda.is_available() else None
    model = load_model(model_name, backend=backend, device=device, dtype=dtype)
    resolved = _resolve_sites(model, specs)
    local_config = replace(config, sample_seed=config.sample_seed + launch.rank)
    chosen = {code: texts_with_budget(model.tokenizer, values, n_tokens, max_length, config.exclude_bos)[0]
              for code, values in texts.items()}
    batches = shard(batch_texts(model.tokenizer, chosen, batch_size=batch_size, max_length=max_length),
                    launch.rank, launch.world_size)
    description = "harvest" if launch.world_size == 1 else f"harvest (rank 0 of {launch.world_size})"
    stats = (harvest(model, batches, resolved, config=local_config, progress=progress and launch.rank == 0,
                     total=len(batches), description=description)
             if batches else ActivationStats(sites=resolved, groups=[], config=local_config, tensors={},
                                             metadata={"model": model_metadata(model), "n_tokens": 0}))
    return stats, {code: len(values) for code, values in chosen.items()}


def _raise_if_any_rank_failed(failure: Exception | None) -> None:
    """Every rank learns whether any rank failed before the collectives that would otherwise wait for it until
    the process group times out; then every rank raises, naming the ranks and their errors."""
    reports: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(reports, None if failure is None else f"{type(failure).__name__}: {failure}")
    failed = "; ".join(f"rank {rank}: {report}" for rank, report in enumerate(reports) if report is not None)
    if failed:
        raise HarvestError(f"the distributed harvest failed on {failed}") from failure


def harvest_corpus(model_name: str, languages: Sequence[str], sites: Sequence[str], *, out: str | Path,
                   config: HarvestConfig = HarvestConfig(), n_tokens: int = 100_000, split: str = "discovery",
                   max_length: int = 256, batch_size: int = 16, backend: str = "hf", progress: bool = True,
                   dtype: torch.dtype = torch.float32) -> ActivationStats:
    """Harvest ``sites`` over each language's ``split`` text (corpus order, up to ``n_tokens`` usable tokens per
    language) and save the :class:`ActivationStats` to ``out`` (groups: the languages).

    ``sites`` are site names (``6.resid_post``, ``blocks.6.mlp.hook_pre``) or kinds (``mlp_pre``: every layer).
    Under ``torchrun`` each rank harvests its shard and the statistics are all-reduced; only rank 0 writes ``out``.
    Every rank returns the combined statistics. Bad input is refused before the model is loaded.
    """
    out = Path(out)
    specs = [_site_spec(text) for text in sites if text.strip()]
    if not specs:
        raise HarvestError("no sites given; pass e.g. --sites mlp_pre (every layer) or --sites 6.resid_post")
    kinds = {spec if isinstance(spec, str) else spec.kind for spec in specs}
    unused = [kind for kind in config.histogram_kinds if kind not in kinds]
    if unused:
        raise HarvestError(f"histogram kind(s) {', '.join(unused)} name no harvested site (kinds harvested: "
                           f"{', '.join(sorted(kinds))}); add the sites or drop the kind from --kinds")
    positive(n_tokens, "--n-tokens")
    positive(batch_size, "--batch-size")
    if max_length < 2:
        raise HarvestError(f"--max-length must be at least 2 (BOS and one token), got {max_length}")
    texts = _corpus_texts(languages, split)
    _check_out(out)
    with _process_group(torchrun_launch()) as launch:
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            stats, chosen = _harvest_shard(model_name, backend, dtype, specs, texts, config, launch,
                                           n_tokens=n_tokens, max_length=max_length, batch_size=batch_size,
                                           progress=progress)
        except Exception as error:
            if launch.world_size == 1:
                raise
            failure = error
        if launch.world_size > 1:
            _raise_if_any_rank_failed(failure)
            stats = all_reduce_stats(stats)
        stats.metadata.update({"split": split, "n_tokens_per_language": n_tokens, "max_length": max_length,
                               "batch_size": batch_size, "world_size": launch.world_size, "texts": chosen,
                               "harvest_seconds": round(time.perf_counter() - started, 2)})
        if launch.rank == 0:
            _save(stats, out)
    return stats
