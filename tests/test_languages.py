"""The language registry: codes, scripts, lookups and their errors."""

from __future__ import annotations

import pytest

from workbench.languages import (
    SCRIPT_RANGES,
    UnknownLanguageError,
    all_languages,
    get_language,
    script_fraction,
)

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


def test_registry_covers_required_languages_with_unique_codes() -> None:
    codes = [lang.code for lang in all_languages()]
    assert len(codes) == len(set(codes)) >= 24
    assert set(REQUIRED) <= set(codes)
    assert codes[0] == "en"


@pytest.mark.parametrize("lang", all_languages(), ids=lambda lang: lang.code)
def test_every_language_is_well_formed(lang) -> None:
    assert len(lang.code) == 2 and lang.code.islower()
    assert lang.script in SCRIPT_RANGES
    assert all(lo <= hi for lo, hi in lang.script_ranges)
    assert lang.lid_label == lang.code  # lid.176 uses ISO 639-1 labels for all registered languages
    assert lang.flores_code.split("_")[1][0].isupper()


@pytest.mark.parametrize(
    ("code", "sample"),
    [
        ("hi", "सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता प्राप्त है"),
        ("ru", "Все люди рождаются свободными и равными"),
        ("ar", "يولد جميع الناس أحرارًا متساوين"),
        ("zh", "人人生而自由，在尊严和权利上一律平等"),
        ("ja", "すべての人間は、生まれながらにして自由であり"),
        ("ko", "모든 인간은 태어날 때부터 자유로우며"),
        ("el", "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι"),
        ("he", "כל בני אדם נולדו בני חורין"),
        ("th", "มนุษย์ทั้งหลายเกิดมามีอิสระ"),
        ("bn", "সমস্ত মানুষ স্বাধীনভাবে সমান মর্যাদা"),
        ("ta", "மனிதப் பிறவியினர் சகலரும் சுதந்திரமாகவே"),
        ("es", "Todos los seres humanos nacen libres e iguales"),
    ],
)
def test_script_fraction_recognizes_each_script(code: str, sample: str) -> None:
    assert script_fraction(sample, code) == 1.0
    assert script_fraction("All human beings are born free", code) == (1.0 if code == "es" else 0.0)


def test_script_fraction_ignores_digits_and_punctuation() -> None:
    assert script_fraction("123 ... !!", "hi") == 0.0
    assert script_fraction("नमस्ते LibreOffice", "hi") == pytest.approx(6 / 17)


@pytest.mark.parametrize(("query", "suggestion"), [("hin", "'hi'"), ("english", "'en'"), ("zz", "'zh'")])
def test_unknown_code_error_lists_codes_and_close_matches(query: str, suggestion: str) -> None:
    with pytest.raises(UnknownLanguageError) as info:
        get_language(query)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"Did you mean {suggestion}" in message
    assert "Known codes (31): en, es, hi" in message
