"""Multilingual corpus: shipped aligned/monolingual text and prompts, splits, user-data loaders.

Shipped data (built by ``scripts/build_corpus.py``; sources in ``workbench/data/NOTICE``)::

    from workbench import corpus
    rows = corpus.parallel(["en", "hi"], split="discovery", n=100)   # aligned rows
    texts = corpus.monolingual("hi", split="dev")                     # one language
    qs = corpus.prompts(split="eval", langs=["es"])                   # weak English prompts
    pairs = corpus.qa_pairs("hi", split="dev")                        # English question, Hindi answer
    articles = corpus.udhr(["eng", "spa", "zul"])                     # UDHR, 500+ versions
    table = corpus.stats()                                            # counts, JSON-ready

Splits ``discovery``/``dev``/``eval`` are disjoint by row and by source document,
fixed by :data:`SEED`, and the same in every language. Unknown languages, splits
or sources and too-large ``n`` raise :class:`CorpusError` subclasses (``ValueError``).
"""

from workbench.corpus.errors import CorpusError, NotEnoughRowsError, UnknownLanguageError, UnknownOptionError
from workbench.corpus.rows import MonolingualRow, ParallelRow, Prompt, QAPair
from workbench.corpus.shipped import (
    MONOLINGUAL_SOURCES,
    PARALLEL_SOURCES,
    languages,
    monolingual,
    parallel,
    prompts,
    qa_pairs,
    shipped_sha256,
    stats,
    udhr,
    udhr_languages,
)
from workbench.corpus.splits import SEED, SPLITS, assign_split
from workbench.corpus.user import load_aligned_jsonl, load_flores, load_text_dir

__all__ = [
    "MONOLINGUAL_SOURCES",
    "PARALLEL_SOURCES",
    "SEED",
    "SPLITS",
    "CorpusError",
    "MonolingualRow",
    "NotEnoughRowsError",
    "ParallelRow",
    "Prompt",
    "QAPair",
    "UnknownLanguageError",
    "UnknownOptionError",
    "assign_split",
    "languages",
    "load_aligned_jsonl",
    "load_flores",
    "load_text_dir",
    "monolingual",
    "parallel",
    "prompts",
    "qa_pairs",
    "shipped_sha256",
    "stats",
    "udhr",
    "udhr_languages",
]
