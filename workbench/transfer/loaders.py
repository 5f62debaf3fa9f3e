"""Loaders for the standard transfer benchmarks, for users who have them: XNLI and Belebele (FLORES+ is
:func:`workbench.corpus.load_flores`). Each reads a local copy when ``source`` is a directory, else the hub (through
``datasets``; nothing here is downloaded unless asked).

Local layouts:

* XNLI: ``<dir>/<lang>/<split>.jsonl`` (``premise``, ``hypothesis``, ``label`` 0/1/2 or a label name), as
  ``datasets``' ``to_json`` writes the hub's ``facebook/xnli``; or the XNLI-1.0 release's ``<dir>/xnli.<split>.tsv``
  (columns ``language``, ``gold_label``, ``sentence1``, ``sentence2``).
* Belebele: ``<dir>/<flores code>.jsonl``, the release's layout (``flores_passage``, ``question``,
  ``mc_answer1..4``, ``correct_answer_num``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.corpus import CorpusError
from workbench.corpus.user import datasets_module
from workbench.languages import get_language

__all__ = ["NLI_LABELS", "BelebeleItem", "NliItem", "load_belebele", "load_xnli"]

NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
"""XNLI's label names, in the order of its integer labels."""
XNLI_HUB_NAME = "facebook/xnli"
BELEBELE_HUB_NAME = "facebook/belebele"
_FLORES_200_NAMES = {"cmn_Hans": "zho_Hans", "cmn_Hant": "zho_Hant"}
"""FLORES+ codes Belebele (built on FLORES-200) spells differently."""


@dataclass(frozen=True)
class NliItem:
    """One premise/hypothesis pair."""

    id: str
    """``xnli:<lang>:<split>:<index>``."""
    premise: str
    """The premise."""
    hypothesis: str
    """The hypothesis."""
    label: str
    """One of :data:`NLI_LABELS`."""


@dataclass(frozen=True)
class BelebeleItem:
    """One multiple-choice reading-comprehension question."""

    id: str
    """``belebele:<flores code>:<link>#<question number>``."""
    passage: str
    """The FLORES passage."""
    question: str
    """The question."""
    answers: tuple[str, str, str, str]
    """The four choices."""
    correct: int
    """Index (0-3) of the right choice."""


def _nli_label(value: Any, where: str) -> str:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        index = int(value)
        if 0 <= index < len(NLI_LABELS):
            return NLI_LABELS[index]
    elif value in NLI_LABELS:
        return value
    raise CorpusError(f"{where}: label {value!r} is neither 0/1/2 nor one of {', '.join(NLI_LABELS)}")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _xnli_records(source: str | Path, language: str, split: str) -> list[dict[str, Any]]:
    root = Path(source)
    if not root.is_dir():
        return list(datasets_module("load_xnli").load_dataset(str(source), language, split=split))
    if (root / language / f"{split}.jsonl").is_file():
        return _read_jsonl(root / language / f"{split}.jsonl")
    tsv = root / f"xnli.{split}.tsv"
    if tsv.is_file():
        with tsv.open(encoding="utf-8", newline="") as handle:
            return [{"premise": row["sentence1"], "hypothesis": row["sentence2"], "label": row["gold_label"]}
                    for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
                    if row["language"] == language]
    raise CorpusError(f"no {language}/{split}.jsonl or xnli.{split}.tsv under {root} (XNLI layouts: see "
                      "workbench.transfer.loaders)")


def load_xnli(language: str, split: str = "test", *, source: str | Path = XNLI_HUB_NAME) -> list[NliItem]:
    """XNLI pairs of one language (a workbench code: ``hi``, ``zh`` ...) and split (``train``/``validation``/
    ``test``) from a local copy or the hub."""
    get_language(language)
    records = _xnli_records(source, language, split)
    if not records:
        raise CorpusError(f"XNLI has no {language} rows in {split} at {source}")
    return [NliItem(f"xnli:{language}:{split}:{index}", record["premise"], record["hypothesis"],
                    _nli_label(record["label"], f"XNLI {language} {split} row {index}"))
            for index, record in enumerate(records)]


def load_belebele(language: str, *, source: str | Path = BELEBELE_HUB_NAME) -> list[BelebeleItem]:
    """Belebele questions of one language (a workbench code, mapped to its FLORES-200 code: ``zh`` ->
    ``zho_Hans``) from a local copy of the
    release or the hub."""
    code = get_language(language).flores_code
    code = _FLORES_200_NAMES.get(code, code)
    root = Path(source)
    if root.is_dir():
        file = root / f"{code}.jsonl"
        if not file.is_file():
            raise CorpusError(f"no {code}.jsonl under {root} (the Belebele release has one <flores code>.jsonl "
                              "per language)")
        records = _read_jsonl(file)
    else:
        records = list(datasets_module("load_belebele").load_dataset(str(source), code, split="test"))
    items = []
    for record in records:
        correct = int(record["correct_answer_num"]) - 1
        if not 0 <= correct < 4:
            raise CorpusError(f"Belebele {code} question {record.get('question_number')}: correct_answer_num "
                              f"{record['correct_answer_num']!r} is not 1-4")
        items.append(BelebeleItem(f"belebele:{code}:{record['link']}#{record['question_number']}",
                                  record["flores_passage"], record["question"],
                                  tuple(record[f"mc_answer{k}"] for k in range(1, 5)), correct))
    return items
