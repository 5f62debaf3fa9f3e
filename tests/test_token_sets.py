"""Token sets per language: the frequency rule on a hand-made vocabulary, then the real tokenizer and the cache."""

from __future__ import annotations

import time
import unicodedata

import pytest
import torch

from workbench.evaluation import token_sets as ts
from workbench.evaluation.token_sets import (
    TokenSetConfig,
    TokenSetError,
    TokenSets,
    build_token_sets,
    diagnostic_tokens,
    token_sets_for,
)
from workbench.languages import UnknownLanguageError

# --------------------------------------------------------------------------- hand-made vocabulary


class WordTokenizer:
    """A whitespace tokenizer over a fixed SentencePiece-style vocabulary (every word is '▁' + word)."""

    name_or_path = "toy-words"

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.ids = {token: i for i, token in enumerate(tokens)}
        self.added_tokens_decoder = {0: "<pad>"}
        self.all_special_ids = [0]

    def __len__(self) -> int:
        return len(self.tokens)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[self.ids["\u2581" + word] for word in text.split()] for text in texts]}


TOY_VOCAB = ["<pad>", "▁the", "▁house", "▁el", "▁casa", "▁de", "▁und", "▁haus", "▁123", "▁!", "<0x41>", "▁über",
             "▁और"]
TOY_TEXTS = {
    "en": ["the house the house de 123 !"] * 3,
    "es": ["el casa de el casa de 123 ! the"] * 3,
    "de": ["und haus über und haus über de 123 !"] * 3,
    "hi": ["और और 123"] * 3,
}


@pytest.fixture(scope="module")
def toy() -> WordTokenizer:
    return WordTokenizer(TOY_VOCAB)


def members(sets: TokenSets, lang: str) -> set[str]:
    return {TOY_VOCAB[i] for i in torch.nonzero(sets.mask(lang)).flatten().tolist()}


def test_diagnostic_tokens_follow_the_ratio_and_count_thresholds() -> None:
    counts = torch.tensor([[6, 2, 4, 3], [0, 2, 20, 0]])  # totals 15 and 22
    pool = torch.ones(2, 4, dtype=torch.bool)
    diagnostic = diagnostic_tokens(counts, pool, 0, ratio=4.0, min_count=3)
    # token 0: (6/15) / ((0+1)/22) = 8.8 >= 4; token 1: count 2 < 3; token 2: (4/15) / (21/22) < 4;
    # token 3: (3/15) / (1/22) = 4.4 >= 4.
    assert diagnostic.tolist() == [True, False, False, True]
    assert diagnostic_tokens(counts, pool, 0, ratio=5.0, min_count=3).tolist() == [True, False, False, False]
    assert not diagnostic_tokens(counts, torch.zeros(2, 4, dtype=torch.bool), 0, ratio=4.0, min_count=1).any()


def test_toy_sets_follow_the_rules(toy: WordTokenizer) -> None:
    sets = build_token_sets(toy, ["en", "es", "de", "hi"], TokenSetConfig(min_count=2), texts_by_language=TOY_TEXTS)
    assert members(sets, "es") == {"▁el", "▁casa"}
    assert members(sets, "de") == {"▁und", "▁haus", "▁über"}
    assert members(sets, "hi") == {"▁और"}
    # ASCII words not diagnostic of es/de; '▁de' is shared by all three languages, so it stays English.
    assert members(sets, "en") == {"▁the", "▁house", "▁de"}
    assert not sets.masks[:, [0, 8, 9, 10]].any()  # <pad>, digits, punctuation, byte token
    assert sets.sizes() == {"en": 3, "es": 2, "de": 3, "hi": 1}
    assert sets.stats["es"]["rule"] == "diagnostic" and sets.stats["hi"]["rule"] == "script"
    assert sets.text_source == "user"


def test_the_vocabulary_is_read_once_per_tokenizer_and_again_when_it_grows() -> None:
    reads = []

    class CountingTokenizer(WordTokenizer):
        def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
            reads.append(len(ids))
            return super().convert_ids_to_tokens(ids)

    tokenizer = CountingTokenizer(list(TOY_VOCAB))
    first = ts.vocab_pieces(tokenizer)
    assert ts.vocab_pieces(tokenizer) == first and reads == [len(TOY_VOCAB)]
    tokenizer.tokens.append("▁nuevo")
    assert ts.vocab_pieces(tokenizer) == [*first, " nuevo"] and reads == [len(TOY_VOCAB), len(TOY_VOCAB) + 1]


def test_toy_errors(toy: WordTokenizer) -> None:
    with pytest.raises(TokenSetError, match="es"):
        build_token_sets(toy, ["en", "es"], texts_by_language={"en": TOY_TEXTS["en"], "es": []})
    with pytest.raises(TokenSetError, match="no texts for de"):
        build_token_sets(toy, ["en", "de"], texts_by_language={"en": TOY_TEXTS["en"]})
    with pytest.raises(TokenSetError, match="need other languages"):
        build_token_sets(toy, ["es"], texts_by_language=TOY_TEXTS)
    with pytest.raises(TokenSetError, match="duplicates"):
        build_token_sets(toy, ["en", "en"], texts_by_language=TOY_TEXTS)
    with pytest.raises(TokenSetError, match="not the string"):
        build_token_sets(toy, "en", texts_by_language=TOY_TEXTS)
    with pytest.raises(TokenSetError, match="never eval"):
        TokenSetConfig(split="eval")
    with pytest.raises(TokenSetError, match="min_script_fraction"):
        TokenSetConfig(min_script_fraction=0.5)


# --------------------------------------------------------------------------- the embedded model's tokenizer

LANGS = ["en", "es", "hi", "zh", "ja", "ru"]


@pytest.fixture(scope="module")
def tokenizer():
    from workbench.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("workbench-cache")


@pytest.fixture(scope="module")
def real_sets(tokenizer, cache_root) -> TokenSets:
    # Set only around the call: the tokenizer itself is read from the real cache.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_CACHE", str(cache_root))
        return token_sets_for(tokenizer, LANGS)


def token_id(tokenizer, token: str) -> int:
    (i,) = tokenizer.convert_tokens_to_ids([token])
    assert tokenizer.convert_ids_to_tokens([i]) == [token], f"{token!r} is not one token of this vocabulary"
    return i


def test_known_tokens_land_in_the_right_sets(tokenizer, real_sets: TokenSets) -> None:
    def owners(token: str) -> list[str]:
        i = token_id(tokenizer, token)
        return [lang for lang in LANGS if real_sets.mask(lang)[i]]

    assert owners("▁the") == ["en"]
    assert owners("▁para") == ["es"]
    assert owners("ción") == ["es"]
    assert owners("▁и") == ["ru"]
    assert owners("の") == ["ja"]
    assert owners("▁的") == ["zh"]
    for token in ["1", "▁", "!", "...", "▁(", "<pad>", "<unused0>", "<0x41>"]:
        assert owners(token) == [], token


def test_script_sets(tokenizer, real_sets: TokenSets) -> None:
    pieces = ts.vocab_pieces(tokenizer)

    def letter_tokens_within(lo: int, hi: int) -> torch.Tensor:
        """Ids of the tokens whose characters (spaces aside) are all letters or marks in [lo, hi]."""
        return torch.tensor([
            i for i, piece in enumerate(pieces)
            if piece.strip()
            and all(lo <= ord(c) <= hi and unicodedata.category(c)[0] in "LM" for c in piece.strip())
        ])

    devanagari = letter_tokens_within(0x0900, 0x097F)
    kana = letter_tokens_within(0x3040, 0x30FF)
    assert len(devanagari) > 1000 and len(kana) > 500
    assert real_sets.mask("hi")[devanagari].all() and not real_sets.mask("en")[devanagari].any()
    assert real_sets.mask("ja")[kana].all() and not real_sets.mask("zh")[kana].any()


def test_sizes_and_summary_are_reported(real_sets: TokenSets) -> None:
    summary = real_sets.summary()
    print("\ntoken-set sizes:", summary["sizes"], "overlaps:", summary["overlaps"])
    assert list(summary["sizes"]) == LANGS and all(size > 1000 for size in summary["sizes"].values())
    assert summary["tokenizer"]["vocab_size"] == 262144 and summary["text_source"] == "corpus:discovery"
    assert summary["stats"]["zh"]["rule"] == "script+diagnostic"
    # Only frequency-based sets may overlap: here es is the only Latin one and zh/ja cannot both pass ratio 4.
    assert summary["overlaps"] == {}


def test_cache_hit_is_fast_and_round_trips(tokenizer, real_sets: TokenSets, cache_root, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_CACHE", str(cache_root))
    monkeypatch.setattr(ts, "build_token_sets", lambda *args, **kwargs: pytest.fail("cache miss"))
    started = time.perf_counter()
    again = token_sets_for(tokenizer, list(reversed(LANGS)))
    assert time.perf_counter() - started < 1.0
    assert again.languages == list(reversed(LANGS))
    assert torch.equal(again.masks, real_sets.masks.flip(0))
    saved = TokenSets.load(real_sets.save(tmp_path / "sets"))
    assert torch.equal(saved.masks, real_sets.masks) and saved.summary() == real_sets.summary()


def test_unknown_codes_raise_the_registry_error(tokenizer, real_sets: TokenSets) -> None:
    with pytest.raises(UnknownLanguageError, match="Known codes"):
        token_sets_for(tokenizer, ["en", "xx"])
    with pytest.raises(UnknownLanguageError):
        real_sets.mask("xx")
    with pytest.raises(TokenSetError, match="hold en, es"):
        real_sets.mask("ko")
