"""Directions from the shipped corpus, cached: one harvest per (model, target, source, config) serves every method.

Texts: the target and source sides of ``n_rows`` parallel discovery rows (same content, so the difference of
means is a difference of language), plus ``n_rows`` monolingual discovery texts of each other language in
``negatives`` for the probe. The direction sets are one :data:`workbench.store.DIRECTIONS` entry per (model, target,
source, config), reused when the inputs are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from workbench import corpus
from workbench.activations import HarvestConfig, batch_texts, harvest
from workbench.backends import Model
from workbench.directions.fit import DIRECTION_METHODS, DirectionConfig, DirectionSet, compute_directions
from workbench.languages import get_language
from workbench.models import model_key, model_metadata
from workbench.sites import sites_for
from workbench.store import DIRECTIONS, Entry, Store, digest


@dataclass(frozen=True)
class DirectionDataConfig:
    """Which corpus text the directions are fitted on, and how it is harvested."""

    n_rows: int = 200
    """Parallel discovery rows (target and source sides), and monolingual texts per negative language."""
    negatives: tuple[str, ...] = ("es", "hi", "zh", "ru", "de", "fr")
    """Further languages the probe separates the target from (the target itself is skipped)."""
    sample_tokens: int = 1024
    """Token activations sampled per layer and language for PCA, LDA and the probe."""
    split: str = "discovery"
    """Corpus split (directions never see dev or eval text)."""
    max_length: int = 64
    """Tokens per text at most."""
    batch_size: int = 16
    """Texts per forward pass."""
    kind: str = "resid_post"
    """Site kind the directions live at (every layer is harvested)."""
    fit: DirectionConfig = DirectionConfig()
    """LDA ridge and probe settings."""

    def digest(self) -> str:
        """Identifies the data and the directions' cache format (part of a direction method's fingerprint)."""
        return digest({**asdict(self), "format": DIRECTIONS.version}, length=10)


def direction_texts(target: str, source: str, config: DirectionDataConfig) -> dict[str, list[str]]:
    """Texts per language: parallel target/source sides, then the negatives' monolingual texts."""
    rows = corpus.parallel([source, target], split=config.split, n=config.n_rows)
    texts = {target: [row.text[target] for row in rows], source: [row.text[source] for row in rows]}
    for lang in config.negatives:
        if lang not in texts:
            texts[lang] = [row.text for row in corpus.monolingual(lang, split=config.split, n=config.n_rows)]
    return texts


def directions_entry(model: Model, target: str, source: str, config: DirectionDataConfig) -> Entry:
    key = {"model": model_key(model), "target": target, "source": source, "data": asdict(config)}
    return Store().entry(DIRECTIONS, key, scope=model_key(model), label=f"{target}-{source}")


def directions_for(model: Model, target: str, source: str = "en", *,
                   config: DirectionDataConfig = DirectionDataConfig(), progress: bool = True,
                   use_cache: bool = True) -> dict[str, DirectionSet]:
    """All direction methods' sets for ``target`` vs ``source`` (loaded from the cache when present)."""
    for code in (target, source):
        get_language(code)
    entry = directions_entry(model, target, source, config)
    if use_cache and entry.ready():
        return {method: DirectionSet.load(entry.path, method) for method in DIRECTION_METHODS}
    texts = direction_texts(target, source, config)
    batches = batch_texts(model.tokenizer, texts, batch_size=config.batch_size, max_length=config.max_length)
    stats = harvest(model, batches, sites_for(model, config.kind), config=HarvestConfig(
        sample_tokens=config.sample_tokens), progress=progress, total=len(batches),
        description=f"harvest {config.kind} for {target} vs {source} directions")
    metadata = {"model": model_metadata(model), "split": config.split, "data": asdict(config),
                "texts": {lang: len(values) for lang, values in texts.items()}}
    sets = compute_directions(stats, target, source, kind=config.kind, config=config.fit, metadata=metadata)
    entry.clear()
    for direction_set in sets.values():
        direction_set.save(entry.prepare())
    entry.commit()
    return sets
