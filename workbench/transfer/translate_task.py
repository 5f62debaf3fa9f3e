"""The ``translate`` task of the transfer study: the base model's few-shot translations into each target, chrF per
sentence (paired against no intervention) and corpus BLEU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from workbench.backends import Model
from workbench.evaluation.scores import bootstrap_interval
from workbench.interventions import Steer
from workbench.transfer.study import TransferConfig, TransferResult, TransferRow, intervention_rows
from workbench.transfer.tasks import translation_items
from workbench.transfer.translate import corpus_bleu, sentence_chrf, translate

__all__ = ["translate_study"]


def _translate_target(model: Model, target: str, config: TransferConfig, progress: bool) -> TransferResult:
    shots = translation_items(target, "dev", n=config.n_shots)
    items = {"dev": translation_items(target, "dev", n=config.n_shots + config.n_dev)[config.n_shots:],
             "eval": translation_items(target, "eval", n=config.n_eval)}
    references = {split: [item.reference for item in chosen] for split, chosen in items.items()}
    outputs = translate(model, items["eval"], shots, target, max_new_tokens=config.max_new_tokens)

    def score(split: str, interventions: Sequence[Steer]) -> np.ndarray:
        if split == "eval" and not interventions:
            return sentence_chrf(outputs, references["eval"])
        return sentence_chrf(translate(model, items[split], shots, target, interventions=interventions,
                                       max_new_tokens=config.max_new_tokens), references[split])

    def bleu(index: np.ndarray) -> float:
        return corpus_bleu([outputs[int(i)] for i in index], [references["eval"][int(i)] for i in index], target)

    base = {"task": "translate", "adaptation": "none"}
    result = intervention_rows(score, model, target, config, base, "chrf", [item.id for item in items["eval"]],
                               progress)
    low, high = bootstrap_interval([np.arange(len(outputs))], bleu, n_resamples=200)
    bleu_row = TransferRow(**base, method="none", language=target, metric="bleu", value=bleu(np.arange(len(outputs))),
                           ci_low=low, ci_high=high, n=len(outputs))
    return result + TransferResult((bleu_row,))


def translate_study(model: Model, config: TransferConfig, *, progress: bool = True) -> TransferResult:
    """Every row and item score of the translate task for ``config.targets``."""
    result = TransferResult()
    for target in tqdm(config.targets, desc="translate", disable=not progress, unit="language"):
        result += _translate_target(model, target, config, progress)
    return result
