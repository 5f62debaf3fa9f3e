"""How questions are put to a model, and the prompting baselines: ask for the target language instead of steering.

A base model sees ``Q: <question>\nA:`` (:data:`QA_TEMPLATE`); an instruct model loaded with
``load_model(..., chat_template=True)`` (``--chat-template`` on the command line) sees its tokenizer's chat template
with the question as the one user turn and the generation prompt opened (:class:`ChatFormat`). Every module that
builds a prompt or a question/answer context asks :func:`prompt_format` of the model, so the position rules (which
find the last prompt token) and the utility contexts follow the template.

``"Answer in <Language>."`` in English, or the same instruction written in the target language. The shipped
corpus (software help, UI strings, the UDHR, fortunes) holds no translation of this instruction in any
language, so the native instructions below were written for the workbench; every result records that source.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, runtime_checkable

from workbench.errors import WorkbenchError
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


def instruction_rewriter(instruction: str, model: Any = None) -> partial[str]:
    """A prompt rewriter adding ``instruction`` to prompts in ``model``'s format (for
    :func:`workbench.evaluation.evaluate`)."""
    return partial(prompt_format(model).with_instruction, instruction=instruction)


class ChatTemplateError(WorkbenchError):
    """A tokenizer without a usable chat template."""


@runtime_checkable
class PromptFormat(Protocol):
    """How a question becomes a prompt, and where an answer and an instruction go."""

    name: str
    answer_prefix: str

    def prompt(self, question: str) -> str:
        """The model-ready prompt for ``question`` (it ends where the answer begins)."""

    def with_instruction(self, prompt: str, instruction: str) -> str:
        """``prompt`` with ``instruction`` added to its question."""


@dataclass(frozen=True)
class QAFormat:
    """``Q: <question>\nA:``, the answer after a space: how the corpus' weak prompts are put to a base model."""

    name: str = "qa"
    """Recorded in the model's metadata (and so in every cache key)."""
    answer_prefix: str = " "
    """What separates the prompt from an answer in a question/answer context."""

    def prompt(self, question: str) -> str:
        return QA_TEMPLATE.format(prompt=question)

    def with_instruction(self, prompt: str, instruction: str) -> str:
        return with_instruction(prompt, instruction)


@dataclass(frozen=True)
class ChatFormat:
    """The tokenizer's chat template around one user turn, generation prompt opened: ``prefix + question + suffix``.

    ``prefix`` and ``suffix`` are read once by rendering a sentinel question; a leading BOS string is dropped when
    the tokenizer adds BOS itself (else every prompt would start with two).
    """

    prefix: str
    """The rendered template before the user's message."""
    suffix: str
    """The rendered template after it, through the opened assistant turn."""
    name: str = "chat"
    """Recorded in the model's metadata (and so in every cache key), with a digest of prefix and suffix."""
    answer_prefix: str = ""
    """The assistant turn starts right after the generation prompt."""

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, *, adds_bos: bool | None = None) -> ChatFormat:
        """Read the template; ``adds_bos``: whether the text is tokenized with BOS prepended (default: whether
        ``tokenizer`` adds it; TransformerLens' hooked models always prepend it, whatever the HF tokenizer does)."""
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise ChatTemplateError(f"{type(tokenizer).__name__} has no chat template: --chat-template needs an "
                                    "instruct model's tokenizer (tokenizer.chat_template is empty); leave it off "
                                    "for a base model, which gets 'Q: ...\nA:' prompts")
        sentinel = "\x07workbench-question\x07"
        # A fixed date for templates that print today's (Llama 3.x): the prompts, and so the cache keys, must not
        # change from one day to the next.
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": sentinel}], tokenize=False,
                                                 add_generation_prompt=True, date_string="1 Jan 2026")
        if rendered.count(sentinel) != 1:
            raise ChatTemplateError("the chat template does not insert the user message verbatim exactly once; "
                                    "the workbench cannot tell where the question ends")
        prefix, suffix = rendered.split(sentinel)
        bos = getattr(tokenizer, "bos_token", None)
        if adds_bos is None:
            adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
        if adds_bos and bos is not None and prefix.startswith(bos):
            prefix = prefix[len(bos):]
        return cls(prefix, suffix)

    def prompt(self, question: str) -> str:
        return f"{self.prefix}{question}{self.suffix}"

    def with_instruction(self, prompt: str, instruction: str) -> str:
        if not (prompt.startswith(self.prefix) and prompt.endswith(self.suffix)):
            return f"{prompt} {instruction}"  # a raw prompt (steer --raw): the instruction follows it
        question = prompt[len(self.prefix):len(prompt) - len(self.suffix)]
        return self.prompt(f"{question} {instruction}")


def prompt_format(model: Any = None) -> PromptFormat:
    """The prompt format ``model`` was loaded with (``Q: ...\nA:`` unless it was loaded with a chat template)."""
    return getattr(model, "workbench_prompt_format", None) or QAFormat()


def qa_prompt(model: Any, question: str) -> str:
    """``question`` as ``model``'s prompt format puts it."""
    return prompt_format(model).prompt(question)


def qa_context(model: Any, question: str, answer: str) -> tuple[str, str]:
    """A question/answer context in ``model``'s format: (the prompt, the answer with its separator)."""
    fmt = prompt_format(model)
    return fmt.prompt(question), fmt.answer_prefix + answer
