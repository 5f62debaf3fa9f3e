"""Token sets per language: which vocabulary tokens count as output "in" a language (METHODS section 5).

For the languages of one set (the sets depend on which other languages are in it):

* **Non-Latin scripts** (script-based): a token is language L's when its letters are in L's script (at least
  ``min_script_fraction`` of them). When several languages of the set claim a token because their scripts share
  Unicode ranges (Cyrillic: ru/uk; Arabic: ar/fa; Han: zh/ja/ko), the token goes only to a claimant it is
  frequency-diagnostic of, against the pooled other claimants. Kana is in ja's script alone, so kana tokens are
  ja's without a frequency test; a pure-Han token is ja's only if diagnostic of ja.
* **Latin script, except English** (frequency-based): L's one-vs-rest diagnostic tokens against all other
  languages of the set pooled, among Latin-script tokens.
* **English**: tokens made of ASCII letters once the SentencePiece space marker and whitespace are removed
  (``'▁the'``, ``'ing'``) that are not diagnostic of another Latin-script language of the set.

A token is *diagnostic* of L against a pool of languages when ``count_L >= min_count`` and
``(count_L / total_L) / ((count_pool + 1) / total_pool) >= ratio``, counts being occurrences in each language's
tokenized monolingual text. The ``+ 1`` (add-one on the pool's count only) keeps tokens never seen in the pool
finite: such a token needs ``count_L >= ratio * total_L / total_pool`` occurrences.

Overlaps: sets are disjoint except that two frequency-based sets can share a token frequent in both of them and
rare in the rest of the pool (e.g. a word common to es and pt when many other languages dilute the pool);
:meth:`TokenSets.summary` reports every such overlap. Tokens without letters (digits, punctuation, whitespace),
special and added tokens (``<pad>``, ``<unused0>``) and byte-fallback tokens (``<0x41>``) are in no set.

:func:`token_sets_for` caches built sets under ``cache_dir() / "token_sets"``, keyed by the tokenizer's vocabulary,
the languages, the config and the shipped corpus.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from workbench import corpus
from workbench.artifacts import atomic_write_json, load_tensors, save_tensors
from workbench.errors import WorkbenchError
from workbench.languages import Language, get_language
from workbench.store import TOKEN_SETS, Entry, Store

__all__ = [
    "DEFAULT_LANGUAGES",
    "TokenSetConfig",
    "TokenSetError",
    "TokenSets",
    "build_token_sets",
    "candidate_languages",
    "count_tokens",
    "diagnostic_tokens",
    "token_set_cache_dir",
    "token_sets_for",
    "vocab_pieces",
]

DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "es", "hi", "zh", "ja", "ru", "ar", "de", "fr")
"""Token-set languages by default: LID candidates and the languages leakage is measured on."""
FORMAT_VERSION = TOKEN_SETS.version
"""Format of saved token sets (the store kind's version)."""
TEXT_SPLITS: tuple[str, ...] = ("discovery", "dev")
_SPACE_MARKER = "\u2581"
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_MASKS_FILE = "masks.safetensors"
_META_FILE = "token_sets.json"
_TOKENIZE_CHUNK = 1024


class TokenSetError(WorkbenchError):
    """A token-set request that cannot be built or answered as asked."""


@dataclass(frozen=True)
class TokenSetConfig:
    """How token sets are built."""

    ratio: float = 4.0
    """Minimum ratio of a token's relative frequency in the language's text to that in the pool's text."""
    min_count: int = 3
    """Minimum number of occurrences in the language's own text for a token to be diagnostic."""
    split: str = "discovery"
    """Corpus split whose monolingual text is counted when no texts are passed: ``"discovery"`` or ``"dev"``."""
    max_tokens_per_language: int | None = None
    """Count at most this many tokens of each language's text (None: all of it); a speed cap."""
    min_script_fraction: float = 1.0
    """A token is in a script when at least this share of its letters are; in (0.5, 1] so no token is in two
    scripts whose ranges do not overlap."""

    def __post_init__(self) -> None:
        if not self.ratio >= 1.0:
            raise TokenSetError(f"ratio must be >= 1 (more frequent than in the rest of the set), got {self.ratio}")
        if self.min_count < 1:
            raise TokenSetError(f"min_count must be >= 1, got {self.min_count}")
        if self.split not in TEXT_SPLITS:
            raise TokenSetError(
                f"split must be one of {', '.join(TEXT_SPLITS)} (never eval, which is kept for reporting), "
                f"got {self.split!r}"
            )
        if self.max_tokens_per_language is not None and self.max_tokens_per_language < 1:
            raise TokenSetError(
                f"max_tokens_per_language must be >= 1 or None, got {self.max_tokens_per_language}"
            )
        if not 0.5 < self.min_script_fraction <= 1.0:
            raise TokenSetError(f"min_script_fraction must be in (0.5, 1], got {self.min_script_fraction}")


@dataclass(frozen=True, eq=False)
class TokenSets:
    """Token sets of several languages over one tokenizer's vocabulary, with their provenance."""

    languages: list[str]
    """Language codes, in the order of the rows of ``masks``."""
    masks: Bool[Tensor, "lang vocab"]
    """``masks[i, t]``: token ``t`` is in the set of ``languages[i]``."""
    config: TokenSetConfig
    """The config the sets were built with."""
    tokenizer: dict[str, Any]
    """``name``, ``vocab_size`` and ``vocab_sha256`` of the tokenizer the sets were built for."""
    text_source: str
    """Where the counted text came from: ``"corpus:<split>"`` or ``"user"``."""
    stats: dict[str, dict[str, Any]]
    """Per language: ``rule``, ``in_script`` (vocabulary tokens in its script; ASCII-letter tokens for English),
    ``script`` (kept by script alone), ``diagnostic`` (kept as frequency-diagnostic), ``size`` and
    ``text_tokens`` (tokens counted in its text; 0 when no counting was needed)."""

    def __post_init__(self) -> None:
        expected = (len(self.languages), self.tokenizer["vocab_size"])
        if tuple(self.masks.shape) != expected:
            raise TokenSetError(f"masks have shape {tuple(self.masks.shape)}, expected (languages, vocab) {expected}")

    def index(self, lang: str) -> int:
        """Row of ``lang`` in :attr:`masks`."""
        if lang not in self.languages:
            get_language(lang)
            raise TokenSetError(f"no token set for {lang!r}; these token sets hold {', '.join(self.languages)}")
        return self.languages.index(lang)

    def mask(self, lang: str) -> Bool[Tensor, " vocab"]:
        """The vocabulary mask of ``lang``'s token set."""
        return self.masks[self.index(lang)]

    def size(self, lang: str) -> int:
        """Number of tokens in ``lang``'s set."""
        return int(self.mask(lang).sum())

    def sizes(self) -> dict[str, int]:
        """Language -> number of tokens in its set."""
        return {lang: self.size(lang) for lang in self.languages}

    def overlaps(self) -> dict[str, int]:
        """``"a&b"`` -> number of tokens in both sets, for every pair of languages whose sets overlap."""
        masks = self.masks.to(torch.float32)
        shared = masks @ masks.T
        return {
            f"{a}&{b}": int(shared[i, j])
            for i, a in enumerate(self.languages)
            for j, b in enumerate(self.languages)
            if i < j and shared[i, j] > 0
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready sizes, per-language statistics, overlaps and provenance."""
        return {
            "languages": list(self.languages),
            "sizes": self.sizes(),
            "overlaps": self.overlaps(),
            "stats": self.stats,
            "config": asdict(self.config),
            "tokenizer": self.tokenizer,
            "text_source": self.text_source,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``masks.safetensors`` and then ``token_sets.json`` (each atomically) into ``directory``."""
        directory = Path(directory)
        save_tensors({"masks": self.masks}, directory / _MASKS_FILE)
        meta = {key: value for key, value in self.summary().items() if key not in ("sizes", "overlaps")}
        atomic_write_json(directory / _META_FILE, {"format_version": FORMAT_VERSION, **meta})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TokenSets:
        """Read token sets written by :meth:`save`."""
        directory = Path(directory)
        meta_path = directory / _META_FILE
        if not meta_path.is_file():
            raise TokenSetError(f"{directory} holds no token sets (no {_META_FILE}); build them with token_sets_for")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise TokenSetError(
                f"{meta_path} has format version {meta.get('format_version')}, this workbench reads {FORMAT_VERSION}"
            )
        return cls(
            languages=meta["languages"],
            masks=load_tensors(directory / _MASKS_FILE)["masks"],
            config=TokenSetConfig(**meta["config"]),
            tokenizer=meta["tokenizer"],
            text_source=meta["text_source"],
            stats=meta["stats"],
        )


# --------------------------------------------------------------------------- vocabulary analysis


_VOCABULARIES: weakref.WeakKeyDictionary[Any, tuple[int, list[str], str]] = weakref.WeakKeyDictionary()
"""Per live tokenizer: its size, token strings and their hash (reading 262k tokens takes ~0.6 s, and every
evaluation asks for its token sets)."""


def _vocabulary(tokenizer: Any) -> tuple[list[str], str]:
    """The token string of every id, in id order, and their hash; read again only when the tokenizer has grown."""
    size = len(tokenizer)
    known = _VOCABULARIES.get(tokenizer)
    if known is None or known[0] != size:
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        known = (size, tokens, hashlib.sha256(json.dumps(tokens, ensure_ascii=False).encode("utf-8")).hexdigest())
        _VOCABULARIES[tokenizer] = known
    return list(known[1]), known[2]


def vocab_pieces(tokenizer: Any, tokens: list[str] | None = None) -> list[str]:
    """The text of every vocabulary token (the SentencePiece marker as a space), ``""`` for special, added and
    byte-fallback tokens, which belong to no language."""
    tokens = _vocabulary(tokenizer)[0] if tokens is None else tokens
    skipped = set(tokenizer.added_tokens_decoder) | set(tokenizer.all_special_ids)
    return [
        "" if i in skipped or _BYTE_TOKEN.fullmatch(token) else token.replace(_SPACE_MARKER, " ")
        for i, token in enumerate(tokens)
    ]


def _script_masks(pieces: list[str], languages: Sequence[Language], min_fraction: float) -> Bool[Tensor, "lang vocab"]:
    """Whether each piece has letters and at least ``min_fraction`` of them are in each language's script."""
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    points = np.frombuffer("".join(pieces).encode("utf-32-le"), dtype=np.uint32)
    owner = np.repeat(np.arange(len(pieces)), lengths)
    unique, inverse = np.unique(points, return_inverse=True)
    is_letter = np.array([unicodedata.category(chr(p))[0] in "LM" for p in unique.tolist()], dtype=bool)[inverse]
    points, owner = points[is_letter], owner[is_letter]
    n_letters = np.bincount(owner, minlength=len(pieces))
    masks = []
    for lang in languages:
        inside = np.zeros(len(points), dtype=bool)
        for lo, hi in lang.script_ranges:
            inside |= (points >= lo) & (points <= hi)
        in_script = np.bincount(owner[inside], minlength=len(pieces))
        masks.append((n_letters > 0) & (in_script >= min_fraction * n_letters))
    return torch.from_numpy(np.stack(masks))


def _ascii_word_mask(pieces: list[str]) -> Bool[Tensor, " vocab"]:
    """Pieces made only of ASCII letters once whitespace is removed."""
    words = ("".join(piece.split()) for piece in pieces)
    return torch.tensor([word.isascii() and word.isalpha() for word in words], dtype=torch.bool)


# --------------------------------------------------------------------------- frequencies


def count_tokens(
    tokenizer: Any, texts: Sequence[str], vocab_size: int, max_tokens: int | None = None
) -> Int[Tensor, " vocab"]:
    """Occurrences of every token id in ``texts`` tokenized without special tokens (the first ``max_tokens``)."""
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    seen = 0
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        encoded = tokenizer(list(texts[start : start + _TOKENIZE_CHUNK]), add_special_tokens=False)["input_ids"]
        ids = [token for row in encoded for token in row]
        if max_tokens is not None:
            ids = ids[: max_tokens - seen]
        counts += torch.bincount(torch.tensor(ids, dtype=torch.int64), minlength=vocab_size)
        seen += len(ids)
        if max_tokens is not None and seen >= max_tokens:
            break
    return counts


def diagnostic_tokens(
    counts: Int[Tensor, "lang vocab"], pool: Bool[Tensor, "lang vocab"], index: int, *, ratio: float, min_count: int
) -> Bool[Tensor, " vocab"]:
    """Tokens diagnostic of language ``index`` against, per token, the other languages ``pool`` marks, pooled.

    Diagnostic: ``count >= min_count`` and ``(count / total) / ((pool_count + 1) / pool_total) >= ratio``, totals
    being the row sums of ``counts``. A token with an empty pool (``pool_total == 0``) is not diagnostic.
    """
    totals = counts.sum(dim=1).to(torch.float64)
    others = pool.clone()
    others[index] = False
    pool_count = (counts * others).sum(dim=0).to(torch.float64)
    pool_total = (totals[:, None] * others).sum(dim=0)
    own = counts[index].to(torch.float64)
    own_rate = own / totals[index]
    pool_rate = (pool_count + 1) / pool_total
    return (own >= min_count) & (own_rate >= ratio * pool_rate)


# --------------------------------------------------------------------------- building


def _resolve_languages(languages: Sequence[str]) -> list[Language]:
    if isinstance(languages, str):
        raise TokenSetError(f"languages must be a list of codes, e.g. [{languages!r}], not the string {languages!r}")
    if not languages:
        raise TokenSetError("languages is empty; pass at least one code, e.g. ['en', 'es']")
    if len(set(languages)) != len(languages):
        raise TokenSetError(f"languages has duplicates: {list(languages)}; pass each code once")
    return [get_language(code) for code in languages]


def _texts(
    languages: Sequence[Language], config: TokenSetConfig, texts_by_language: Mapping[str, Sequence[str]] | None
) -> dict[str, Sequence[str]]:
    if texts_by_language is None:
        return {lang.code: [row.text for row in corpus.monolingual(lang.code, split=config.split)]
                for lang in languages}
    missing = [lang.code for lang in languages if lang.code not in texts_by_language]
    if missing:
        raise TokenSetError(
            f"texts_by_language has no texts for {', '.join(missing)}; frequency-diagnostic tokens are measured "
            "against every language of the set, so pass texts for all of them (or texts_by_language=None)"
        )
    return {lang.code: texts_by_language[lang.code] for lang in languages}


def build_token_sets(
    tokenizer: Any,
    languages: Sequence[str],
    config: TokenSetConfig = TokenSetConfig(),
    *,
    texts_by_language: Mapping[str, Sequence[str]] | None = None,
) -> TokenSets:
    """Build the token sets of ``languages`` (rules in the module docstring) over ``tokenizer``'s vocabulary.

    Args:
        tokenizer: A Hugging Face tokenizer (``load_tokenizer()`` for the embedded model).
        languages: Registered language codes.
        config: Thresholds, corpus split and caps.
        texts_by_language: Code -> texts to count tokens on; None takes each language's monolingual text of the
            shipped corpus split ``config.split``. Text is only read when some language needs frequencies.

    Raises:
        UnknownLanguageError: an unregistered code.
        TokenSetError: duplicate codes, a Latin-script language other than English alone in the set, or a
            language without text when frequencies are needed.
    """
    langs = _resolve_languages(languages)
    tokens, vocab_sha256 = _vocabulary(tokenizer)
    pieces = vocab_pieces(tokenizer, tokens)
    vocab_size = len(pieces)
    in_script = _script_masks(pieces, langs, config.min_script_fraction)
    is_latin = torch.tensor([lang.script == "Latin" for lang in langs])
    claims = in_script & ~is_latin[:, None]
    contested = claims & (claims.sum(dim=0) > 1)
    frequency_based = [
        lang.code for i, lang in enumerate(langs) if (is_latin[i] and lang.code != "en") or contested[i].any()
    ]
    if frequency_based and len(langs) == 1:
        raise TokenSetError(
            f"{langs[0].code}: Latin-script token sets are one-vs-rest frequency-diagnostic and need other languages "
            f"to compare with; pass e.g. ['en', {langs[0].code!r}]"
        )

    counts = torch.zeros(len(langs), vocab_size, dtype=torch.int64)
    if frequency_based:
        texts = _texts(langs, config, texts_by_language)
        for i, lang in enumerate(langs):
            counts[i] = count_tokens(tokenizer, texts[lang.code], vocab_size, config.max_tokens_per_language)
        empty = [lang.code for i, lang in enumerate(langs) if counts[i].sum() == 0]
        if empty:
            raise TokenSetError(
                f"no text to count tokens on for {', '.join(empty)}; {', '.join(frequency_based)} need frequency-"
                "diagnostic tokens measured against every language of the set, so each needs non-empty text"
            )

    def diagnostic(i: int, pool: Bool[Tensor, "lang vocab"]) -> Bool[Tensor, " vocab"]:
        return diagnostic_tokens(counts, pool, i, ratio=config.ratio, min_count=config.min_count)

    everyone = torch.ones_like(claims)
    masks = torch.zeros(len(langs), vocab_size, dtype=torch.bool)
    stats: dict[str, dict[str, Any]] = {}
    for i, lang in enumerate(langs):
        if is_latin[i]:
            if lang.code == "en":
                continue
            kept = diagnostic(i, everyone) & in_script[i]
            masks[i] = kept
            stats[lang.code] = {"rule": "diagnostic", "in_script": int(in_script[i].sum()), "script": 0,
                                "diagnostic": int(kept.sum())}
        else:
            alone = claims[i] & ~contested[i]
            kept = diagnostic(i, claims) & contested[i]
            masks[i] = alone | kept
            stats[lang.code] = {"rule": "script+diagnostic" if contested[i].any() else "script",
                                "in_script": int(in_script[i].sum()), "script": int(alone.sum()),
                                "diagnostic": int(kept.sum())}
    if "en" in languages:
        i = list(languages).index("en")
        ascii_words = _ascii_word_mask(pieces)
        other_latin = is_latin.clone()
        other_latin[i] = False
        masks[i] = ascii_words & ~masks[other_latin].any(dim=0)
        stats["en"] = {"rule": "ascii-minus-diagnostic", "in_script": int(ascii_words.sum()),
                       "script": int(masks[i].sum()), "diagnostic": 0}
    for i, lang in enumerate(langs):
        stats[lang.code].update(size=int(masks[i].sum()), text_tokens=int(counts[i].sum()))
    return TokenSets(
        languages=[lang.code for lang in langs],
        masks=masks,
        config=config,
        tokenizer={"name": str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__)),
                   "vocab_size": vocab_size, "vocab_sha256": vocab_sha256},
        text_source="user" if texts_by_language is not None else f"corpus:{config.split}",
        stats={lang.code: stats[lang.code] for lang in langs},
    )


# --------------------------------------------------------------------------- cache


def _entry(tokenizer: Any, codes: list[str], config: TokenSetConfig) -> Entry:
    key = {"vocab_sha256": _vocabulary(tokenizer)[1], "languages": sorted(codes),
           "config": asdict(config), "corpus_sha256": corpus.shipped_sha256()}
    return Store().entry(TOKEN_SETS, key, label="-".join(sorted(codes)))


def candidate_languages(target: str, source: str, languages: Sequence[str] = DEFAULT_LANGUAGES) -> list[str]:
    """``languages`` with the target and source added (each once, in order)."""
    return list(dict.fromkeys([*languages, target, source]))


def _reordered(sets: TokenSets, languages: list[str]) -> TokenSets:
    rows = [sets.languages.index(code) for code in languages]
    return TokenSets(languages=list(languages), masks=sets.masks[rows], config=sets.config, tokenizer=sets.tokenizer,
                     text_source=sets.text_source, stats={code: sets.stats[code] for code in languages})


def token_set_cache_dir(tokenizer: Any, languages: Sequence[str], config: TokenSetConfig = TokenSetConfig()) -> Path:
    """Where :func:`token_sets_for` caches the sets of ``languages`` for ``tokenizer`` and ``config``."""
    return _entry(tokenizer, [lang.code for lang in _resolve_languages(languages)], config).path


def token_sets_for(
    tokenizer: Any, languages: Sequence[str], config: TokenSetConfig = TokenSetConfig()
) -> TokenSets:
    """The token sets of ``languages`` from the shipped corpus, built once and then read from the store.

    The store entry (see :func:`token_set_cache_dir`) is read only when committed and intact, so an interrupted or
    corrupted build is rebuilt. The returned sets follow the order of ``languages``.
    """
    codes = [lang.code for lang in _resolve_languages(languages)]
    entry = _entry(tokenizer, codes, config)
    if not entry.ready():
        entry.clear()
        build_token_sets(tokenizer, codes, config).save(entry.prepare())
        entry.commit()
    return _reordered(TokenSets.load(entry.path), codes)
