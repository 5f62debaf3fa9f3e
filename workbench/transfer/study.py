"""The transfer study's configuration, result rows and the rows every task shares (each intervention's score and
its paired change against none); the tasks are :mod:`~workbench.transfer.module_task` and
:mod:`~workbench.transfer.translate_task`, run by :func:`workbench.transfer.run.run_transfer`.

Every choice is made on dev: the probe's layer on English dev rows; CLAS's alpha on the target's dev rows (its
paper tunes alpha per task, so this favours CLAS); everything is reported on eval rows. English and target
accuracy are read on the same eval rows, so the transfer gap is paired; every change is a paired bootstrap over
items against no intervention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.evaluation.scores import bootstrap_interval
from workbench.interventions import Steer
from workbench.transfer.interventions import (
    TransferInterventionConfig,
    build_intervention,
    intervention_names,
)
from workbench.transfer.lora import LoraTrainConfig
from workbench.transfer.probe import ProbeConfig

__all__ = ["ADAPTATIONS", "TASKS", "TransferConfig", "TransferError", "TransferItem", "TransferResult", "TransferRow",
           "check_config", "interval", "intervention_rows", "item_scores", "paired_interval"]

TASKS: tuple[str, ...] = ("module", "translate")
ADAPTATIONS: tuple[str, ...] = ("probe", "lora", "masked-lora")


class TransferError(WorkbenchError):
    """A transfer study asked for something that does not exist or does not fit."""


@dataclass(frozen=True)
class TransferConfig:
    """One transfer study."""

    task: str = "module"
    """``module`` (classification, paired accuracy) or ``translate`` (few-shot en -> X, chrF / BLEU)."""
    targets: tuple[str, ...] = ("hi", "es", "de", "zh", "ko", "ja", "ar")
    """Target languages."""
    interventions: tuple[str, ...] = ("none", "clas", "lape-mean", "lape-zero", "random-lape-mean",
                                      "random-lape-zero")
    """Test-time interventions (:func:`~workbench.transfer.interventions.intervention_names`); ``none`` is
    always run, as the reference of every change."""
    adaptation: str = "probe"
    """Module task: ``probe`` (frozen model), ``lora`` or ``masked-lora`` (LoRA on the target's neurons)."""
    mask: str = "lape"
    """Masked LoRA's neurons: ``lape``, ``ap90``, or ``random-lape`` / ``random-ap90`` (as many per layer, matched
    in activation probability)."""
    n_train: int = 1024
    """English training rows (module task; classes balanced as far as they go)."""
    n_dev: int = 128
    """Dev rows (English for the probe's layer, target for CLAS's alpha) or dev sentences (translate)."""
    n_eval: int = 256
    """Eval rows per target (fewer where a language has fewer)."""
    n_shots: int = 3
    """Translate: examples in the prompt (from the dev split)."""
    max_new_tokens: int = 64
    """Translate: tokens generated per sentence."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """The probe."""
    lora: LoraTrainConfig = field(default_factory=LoraTrainConfig)
    """LoRA and masked LoRA."""
    neurons: TransferInterventionConfig = field(default_factory=TransferInterventionConfig)
    """Neuron sets, their statistics and CLAS's alpha grid."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of every interval."""


@dataclass(frozen=True)
class TransferRow:
    """One number of the study."""

    task: str
    """``module`` or ``translate``."""
    adaptation: str
    """``probe``, ``lora``, ``masked-lora:<mask>`` or ``none`` (translate)."""
    method: str
    """The intervention."""
    language: str
    """The target language."""
    metric: str
    """``accuracy``, ``english_accuracy``, ``transfer_gap``, ``delta_accuracy``, ``majority_share`` (the most
    frequent class's share of the eval rows: what always guessing it scores), ``balanced_accuracy`` (the mean of the
    per-class recalls: chance is one over the classes, so a classifier collapsed onto the commonest class gains
    nothing), ``english_balanced_accuracy``, ``delta_balanced_accuracy``, ``chrf``, ``delta_chrf``, ``bleu``."""
    value: float
    """The estimate."""
    ci_low: float
    """95% bootstrap interval, low end."""
    ci_high: float
    """95% bootstrap interval, high end."""
    n: int
    """Items."""
    setting: str = ""
    """What dev chose (``layer 12``, ``alpha 0.5``) and the rows' source."""


@dataclass(frozen=True)
class TransferItem:
    """One eval item's score, kept so that two runs (say LoRA masked to LAPE neurons and to random neurons) can be
    compared item by item (:func:`~workbench.transfer.compare.compare_runs`)."""

    task: str
    """``module`` or ``translate``."""
    adaptation: str
    """As in :class:`TransferRow`."""
    method: str
    """The intervention."""
    language: str
    """The target language."""
    metric: str
    """``accuracy`` (1 correct, 0 not), ``english_accuracy`` (the same row read in English) or ``chrf``."""
    item: str
    """The corpus row id."""
    score: float
    """The item's score."""


@dataclass(frozen=True)
class TransferResult:
    """A study's numbers (:attr:`rows`) and the per-item scores behind them (:attr:`items`)."""

    rows: tuple[TransferRow, ...] = ()
    """Every estimate with its interval."""
    items: tuple[TransferItem, ...] = ()
    """Every eval item's score under every method."""

    def __add__(self, other: TransferResult) -> TransferResult:
        return TransferResult(self.rows + other.rows, self.items + other.items)


def item_scores(base: dict[str, str], method: str, language: str, metric: str, ids: Sequence[str],
                scores: np.ndarray) -> tuple[TransferItem, ...]:
    """One :class:`TransferItem` per eval item."""
    return tuple(TransferItem(**base, method=method, language=language, metric=metric, item=item, score=float(score))
                 for item, score in zip(ids, scores, strict=True))


def check_config(config: TransferConfig) -> None:
    """Refuse an unknown task, adaptation, intervention or mask before any model work."""
    if config.task not in TASKS:
        raise TransferError(f"unknown task {config.task!r}; known: {', '.join(TASKS)}")
    if config.adaptation not in ADAPTATIONS:
        raise TransferError(f"unknown adaptation {config.adaptation!r}; known: {', '.join(ADAPTATIONS)}")
    if config.task == "translate" and config.adaptation != "probe":
        raise TransferError("translate uses the base model (no adaptation); drop --adapt or use --task module")
    unknown = [name for name in config.interventions if name not in intervention_names()]
    if unknown:
        raise TransferError(f"unknown interventions {unknown}; known: {', '.join(intervention_names())}")
    if config.mask not in ("lape", "ap90", "random-lape", "random-ap90"):
        raise TransferError(f"unknown mask {config.mask!r}; known: lape, ap90, random-lape, random-ap90")
    if "en" in config.targets or not config.targets:
        raise TransferError("targets must name at least one language other than en (English is the source)")


def interval(values: np.ndarray, config: TransferConfig) -> tuple[float, float]:
    return bootstrap_interval([values], np.mean, n_resamples=config.n_bootstrap)


def paired_interval(treated: np.ndarray, reference: np.ndarray, config: TransferConfig) -> tuple[float, float]:
    return bootstrap_interval([treated, reference], lambda a, b: float(np.mean(a) - np.mean(b)),
                              n_resamples=config.n_bootstrap)


Scorer = Callable[[str, Sequence[Steer]], np.ndarray]
"""(split, interventions) -> per-item scores of one target under those interventions."""


def _choose_alpha(score: Scorer, model: Model, target: str, config: TransferConfig, progress: bool) -> float:
    plans = [build_intervention(model, "clas", target, config.neurons, alpha=alpha, progress=progress)
             for alpha in config.neurons.clas_alphas]
    dev = [float(score("dev", plan.interventions).mean()) for plan in plans]
    return config.neurons.clas_alphas[int(np.argmax(dev))]


def intervention_rows(score: Scorer, model: Model, target: str, config: TransferConfig, base: dict[str, str],
                      metric: str, ids: Sequence[str], progress: bool) -> TransferResult:
    """Rows of every intervention on one target (the score and its paired change against none) and the eval items'
    scores (``ids`` name the eval items in order)."""
    reference = score("eval", ())
    n = len(reference)
    low, high = interval(reference, config)
    rows = [TransferRow(**base, method="none", language=target, metric=metric, value=float(reference.mean()),
                        ci_low=low, ci_high=high, n=n)]
    items = item_scores(base, "none", target, metric, ids, reference)
    for name in config.interventions:
        if name == "none":
            continue
        alpha = _choose_alpha(score, model, target, config, progress) if name == "clas" else 0.0
        plan = build_intervention(model, name, target, config.neurons, alpha=alpha, progress=progress)
        treated = score("eval", plan.interventions)
        items += item_scores(base, name, target, metric, ids, treated)
        setting = f"alpha {alpha:g} (dev)" if name == "clas" else f"{plan.n_neurons} neurons"
        low, high = interval(treated, config)
        rows.append(TransferRow(**base, method=name, language=target, metric=metric, value=float(treated.mean()),
                                ci_low=low, ci_high=high, n=n, setting=setting))
        low, high = paired_interval(treated, reference, config)
        rows.append(TransferRow(**base, method=name, language=target, metric=f"delta_{metric}",
                                value=float(treated.mean() - reference.mean()), ci_low=low, ci_high=high, n=n,
                                setting=setting))
    return TransferResult(tuple(rows), items)
