"""Prompting baselines: ask for the target language instead of steering.

``"Answer in <Language>."`` in English, or the same instruction written in the target language. The shipped
corpus (software help, UI strings, the UDHR, fortunes) holds no translation of this instruction in any
language, so the native instructions below were written for the workbench; every result records that source.
"""

from __future__ import annotations

from functools import partial

from workbench.languages import get_language

QA_TEMPLATE = "Q: {prompt}\nA:"
"""How the corpus' weak prompts are put to a base model."""

NATIVE_INSTRUCTIONS: dict[str, str] = {
    "en": "Answer in English.",
    "es": "Responde en español.",
    "hi": "हिंदी में उत्तर दें।",
    "zh": "请用中文回答。",
    "ja": "日本語で答えてください。",
    "ru": "Отвечай на русском языке.",
    "ar": "أجب باللغة العربية.",
    "de": "Antworte auf Deutsch.",
    "fr": "Réponds en français.",
    "pt": "Responda em português.",
    "it": "Rispondi in italiano.",
    "ko": "한국어로 답하세요.",
    "vi": "Hãy trả lời bằng tiếng Việt.",
    "tr": "Türkçe cevap ver.",
    "id": "Jawab dalam bahasa Indonesia.",
    "nl": "Antwoord in het Nederlands.",
    "pl": "Odpowiedz po polsku.",
    "uk": "Відповідай українською мовою.",
    "cs": "Odpověz česky.",
    "el": "Απάντησε στα ελληνικά.",
    "sv": "Svara på svenska.",
    "fi": "Vastaa suomeksi.",
    "hu": "Válaszolj magyarul.",
    "da": "Svar på dansk.",
    "ca": "Respon en català.",
    "ro": "Răspunde în limba română.",
    "he": "ענה בעברית.",
    "fa": "به فارسی پاسخ بده.",
    "th": "ตอบเป็นภาษาไทย",
    "bn": "বাংলায় উত্তর দাও।",
    "ta": "தமிழில் பதிலளிக்கவும்.",
}
"""``"Answer in <Language>."`` in each language of the shipped corpus (written for the workbench, not corpus text)."""

INSTRUCTION_SOURCE = "written for the workbench (the shipped corpus has no translation of this instruction)"


def english_instruction(target: str) -> str:
    """``"Answer in <Language>."`` with the language's English name (e.g. "Answer in Hindi.")."""
    name = get_language(target).name.split(" (")[0]
    return f"Answer in {name}."


def native_instruction(target: str) -> tuple[str, str]:
    """The instruction in the target language and where it came from; English where no translation exists."""
    get_language(target)
    if target in NATIVE_INSTRUCTIONS:
        return NATIVE_INSTRUCTIONS[target], INSTRUCTION_SOURCE
    return english_instruction(target), "no native translation available: the English instruction is used"


def with_instruction(prompt: str, instruction: str) -> str:
    """Put ``instruction`` at the end of the question: before a trailing ``"\\nA:"``, else after the prompt."""
    head, separator, tail = prompt.rpartition("\nA:")
    if separator and not tail.strip():
        return f"{head} {instruction}{separator}{tail}"
    return f"{prompt} {instruction}"


def instruction_rewriter(instruction: str) -> partial[str]:
    """A prompt rewriter adding ``instruction`` (for :func:`workbench.evaluation.evaluate`)."""
    return partial(with_instruction, instruction=instruction)
