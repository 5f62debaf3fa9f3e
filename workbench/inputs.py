"""Checks of user input that run before any heavy work: each bad value is one :class:`InputError` that says what is
wrong and what would be right (the command line prints it as one line and exits with code 2).

    positive(max_new_tokens, "--max-new-tokens")
    strengths = numbers("0.1,0.5,1", "--strengths")
    prompts = read_prompts_file(Path("prompts.jsonl"))
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

from workbench.errors import WorkbenchError


class InputError(WorkbenchError):
    """A value given by the user that the workbench cannot run with."""


def positive(value: int | float, option: str) -> int:
    """``value`` when it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{option} must be a positive integer, got {value!r}")
    return value


def finite(value: float | int, option: str, *, minimum: float | int | None = None) -> float:
    """``value`` when it is a finite number (and at least ``minimum``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{option} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{option} must be at least {minimum:g}, got {value:g}")
    return float(value)


def numbers(text: str, option: str, *, minimum: float | int | None = None) -> tuple[float, ...]:
    """Comma-separated finite numbers, e.g. ``"0.1,0.5,1"``."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise InputError(f"{option} needs at least one number (comma-separated, e.g. 0.1,0.5,1), got {text!r}")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise InputError(f"{option}: {part!r} is not a number (expected comma-separated numbers, e.g. "
                             "0.1,0.5,1)") from None
    return tuple(finite(value, option, minimum=minimum) for value in values)


def integers(text: str, option: str) -> tuple[int, ...]:
    """Comma-separated non-negative integers, e.g. ``"2,6,10"``."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise InputError(f"{option} must be comma-separated non-negative integers (e.g. 2,6,10), got {text!r}")
    return tuple(int(part) for part in parts)


def distinct_languages(target: str, source: str) -> None:
    """Steering needs a target other than the source."""
    if target == source:
        raise InputError(f"--target and --source are both {target!r}: steering needs a target language other than "
                         "the source (e.g. --source en --target hi)")


def unique(items: Iterable[str], what: str) -> list[str]:
    """``items`` when none repeats."""
    items = list(items)
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise InputError(f"{what} lists {', '.join(repeated)} more than once; give each once")
    return items


def non_blank(texts: Iterable[str], what: str) -> list[str]:
    """``texts`` when none is empty or whitespace only."""
    texts = list(texts)
    for index, text in enumerate(texts, 1):
        if not text.strip():
            raise InputError(f"{what} {index} is empty or whitespace only; give the text to generate from")
    return texts


def read_prompts_file(path: Path) -> list[str]:
    """Prompts from a UTF-8 file: one per line, or JSON lines with a ``prompt`` field (blank lines skipped)."""
    if not path.is_file():
        raise InputError(f"prompts file {path} does not exist (expected a UTF-8 text file, one prompt per line)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise InputError(f"line {line} of {path} is not UTF-8 (byte {raw[error.start]:#04x}); save the file as "
                         "UTF-8") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not line.lstrip().startswith("{"):
            prompts.append(line.strip())
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"line {number} of {path} is not valid JSON ({error.msg} at column {error.colno}); "
                             "each line is a prompt or a JSON object with a 'prompt' field") from None
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise InputError(f"line {number} of {path} has no non-empty 'prompt' string (it has: {keys})")
        prompts.append(prompt)
    return prompts
