"""The ``module`` task of the transfer study: English-only adaptation (probe, LoRA or masked LoRA), then paired
English / target accuracy on identical eval rows, with and without each test-time intervention."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.backends import Model, adapted_copy
from workbench.evaluation.scores import bootstrap_interval, wilson_interval
from workbench.interventions import Steer
from workbench.transfer.interventions import build_intervention
from workbench.transfer.lora import LinearHead, attach_lora, classify, fit_linear_head, train_classifier
from workbench.transfer.probe import fit_probe, pooled_features, probe_layers
from workbench.transfer.study import (
    TransferConfig,
    TransferResult,
    TransferRow,
    interval,
    intervention_rows,
    item_scores,
    paired_interval,
)
from workbench.transfer.tasks import MODULES, ModuleExample, module_rows, module_training_rows

__all__ = ["balanced_accuracy", "module_study"]

Classifier = Callable[[Sequence[str], Sequence[Steer]], list[str]]
"""(texts, interventions) -> predicted classes."""


def _texts(rows: Sequence[ModuleExample], language: str) -> list[str]:
    return [row.text[language] for row in rows]


def _labels(rows: Sequence[ModuleExample]) -> list[str]:
    return [row.label for row in rows]


def _probe_classifier(model: Model, config: TransferConfig, progress: bool) -> tuple[Classifier, str]:
    train, dev = module_training_rows(config.n_train), module_training_rows(config.n_dev, split="dev")
    layers = probe_layers(model, config.probe)
    probe = fit_probe(pooled_features(model, _texts(train, "en"), layers, config.probe, progress=progress,
                                      description="pool train [en]"), _labels(train),
                      pooled_features(model, _texts(dev, "en"), layers, config.probe, progress=progress,
                                      description="pool dev [en]"), _labels(dev), layers, config.probe)

    def predict(texts: Sequence[str], interventions: Sequence[Steer]) -> list[str]:
        features = pooled_features(model, texts, [probe.layer], config.probe, interventions=interventions,
                                   progress=False)[0]
        return list(probe.classifier.predict(features.numpy()))

    return predict, f"probe at layer {probe.layer} (English dev accuracy {probe.dev_accuracy[probe.layer]:.3f})"


def _linear_head(model: Model, config: TransferConfig, progress: bool) -> LinearHead | None:
    """The head every LoRA run of the study starts from (LP-FT), fit once on the base model."""
    if not config.lora.linear_probe_init:
        return None
    train, dev = module_training_rows(config.n_train), module_training_rows(config.n_dev, split="dev")
    return fit_linear_head(model, _texts(train, "en"), _labels(train), _texts(dev, "en"), _labels(dev), MODULES,
                           config.lora, progress=progress)


def _lora_classifier(model: Model, config: TransferConfig, neurons: torch.Tensor | None, head: LinearHead | None,
                     progress: bool) -> tuple[Classifier, str]:
    train, dev = module_training_rows(config.n_train), module_training_rows(config.n_dev, split="dev")
    adapted = adapted_copy(model, lambda hf_model: attach_lora(hf_model, config.lora, neurons))
    classifier = train_classifier(adapted, _texts(train, "en"), _labels(train), MODULES, config.lora, head=head,
                                  progress=progress)

    def predict(texts: Sequence[str], interventions: Sequence[Steer]) -> list[str]:
        return classify(classifier, texts, interventions=interventions, max_length=config.lora.max_length)

    dev_accuracy = float(np.mean(np.asarray(predict(_texts(dev, "en"), ())) == np.asarray(_labels(dev))))
    start = (f"a linear-probe head (C {head.inverse_regularisation:g}, English dev accuracy "
             f"{head.dev_accuracy[head.inverse_regularisation]:.3f})" if head is not None else "a random head")
    return predict, (f"{config.lora.steps} steps from {start} (English dev accuracy after training "
                     f"{dev_accuracy:.3f})")


def _mask_neurons(model: Model, config: TransferConfig, target: str, progress: bool) -> tuple[torch.Tensor, int]:
    """The neurons masked LoRA may change for ``target`` (a zero-valued intervention plan's selection)."""
    plan = build_intervention(model, f"{config.mask}-zero", target, config.neurons, progress=progress)
    selected = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.bool)
    for intervention in plan.interventions:
        selected[intervention.layer, intervention.edit.units] = True
    return selected, plan.n_neurons


def balanced_accuracy(correct: np.ndarray, classes: np.ndarray) -> float:
    """The mean over the classes present of the share of each class's items classified correctly (chance: one over
    the number of classes, whatever their sizes), so a classifier that puts every row in one class scores 1 / K."""
    return float(np.mean([correct[classes == label].mean() for label in np.unique(classes)]))


def _balanced_rows(result: TransferResult, labels: Sequence[str], target: str, config: TransferConfig,
                   base: dict[str, str]) -> list[TransferRow]:
    """Balanced accuracy of every method and of English on the same rows, and each method's paired change against
    none (the bootstrap resamples items and recomputes the class shares)."""
    classes = np.unique(np.asarray(labels), return_inverse=True)[1].astype(float)
    scores: dict[tuple[str, str], list[float]] = {}
    for item in result.items:
        scores.setdefault((item.method, item.metric), []).append(item.score)
    settings = {row.method: row.setting for row in result.rows if row.metric == "accuracy"}
    rows = []
    reference = np.asarray(scores["none", "accuracy"])
    for (method, metric), values in scores.items():
        correct = np.asarray(values)
        name = "english_balanced_accuracy" if metric == "english_accuracy" else "balanced_accuracy"
        low, high = bootstrap_interval([correct, classes], balanced_accuracy, n_resamples=config.n_bootstrap)
        rows.append(TransferRow(**base, method=method, language=target, metric=name,
                                value=balanced_accuracy(correct, classes), ci_low=low, ci_high=high, n=len(correct),
                                setting=settings.get(method, "")))
        if metric == "accuracy" and method != "none":
            low, high = bootstrap_interval(
                [correct, reference, classes],
                lambda treated, untreated, k: balanced_accuracy(treated, k) - balanced_accuracy(untreated, k),
                n_resamples=config.n_bootstrap)
            rows.append(TransferRow(**base, method=method, language=target, metric="delta_balanced_accuracy",
                                    value=balanced_accuracy(correct, classes) - balanced_accuracy(reference, classes),
                                    ci_low=low, ci_high=high, n=len(correct), setting=settings[method]))
    return rows


def _target_rows(model: Model, predict: Classifier, target: str, config: TransferConfig, adaptation: str,
                 setting: str, progress: bool) -> TransferResult:
    rows = {"dev": module_rows(target, "dev", n=config.n_dev), "eval": module_rows(target, "eval", n=config.n_eval)}
    source = rows["eval"][0].source

    unintervened: dict[str, np.ndarray] = {}

    def correct(split: str, interventions: Sequence[Steer]) -> np.ndarray:
        if not interventions and split in unintervened:
            return unintervened[split]
        result = np.asarray(predict(_texts(rows[split], target), interventions)) == np.asarray(_labels(rows[split]))
        if not interventions:
            unintervened[split] = result
        return result

    base = {"task": "module", "adaptation": adaptation}
    ids = [row.id for row in rows["eval"]]
    result = intervention_rows(correct, model, target, config, base, "accuracy", ids, progress)
    english = np.asarray(predict(_texts(rows["eval"], "en"), ())) == np.asarray(_labels(rows["eval"]))
    target_none = correct("eval", ())
    n = len(english)
    results = list(result.rows)
    low, high = interval(english, config)
    results.append(TransferRow(**base, method="none", language=target, metric="english_accuracy",
                               value=float(english.mean()), ci_low=low, ci_high=high, n=n))
    majority = max(Counter(_labels(rows["eval"])).values())
    low, high = wilson_interval(majority, n)
    results.append(TransferRow(**base, method="none", language=target, metric="majority_share",
                               value=majority / n, ci_low=low, ci_high=high, n=n))
    low, high = paired_interval(english, target_none, config)
    results.append(TransferRow(**base, method="none", language=target, metric="transfer_gap",
                               value=float(english.mean() - target_none.mean()), ci_low=low, ci_high=high, n=n))
    items = result.items + item_scores(base, "none", target, "english_accuracy", ids, english)
    results += _balanced_rows(TransferResult(result.rows, items), _labels(rows["eval"]), target, config, base)
    return TransferResult(
        tuple(replace(row, setting="; ".join(part for part in (row.setting, setting, f"rows: {source}") if part))
              for row in results), items)


def module_study(model: Model, config: TransferConfig, *, progress: bool = True) -> TransferResult:
    """Every row and item score of the module task for ``config.targets``."""
    result = TransferResult()
    shared: Classifier | None = None
    setting = ""
    head = _linear_head(model, config, progress) if config.adaptation != "probe" else None
    if config.adaptation == "probe":
        shared, setting = _probe_classifier(model, config, progress)
    elif config.adaptation == "lora":
        shared, trained = _lora_classifier(model, config, None, head, progress)
        setting = f"LoRA on every MLP neuron, {trained}"
    for target in tqdm(config.targets, desc="module", disable=not progress, unit="language"):
        predict, adaptation, target_setting = shared, config.adaptation, setting
        if predict is None:
            neurons, count = _mask_neurons(model, config, target, progress)
            predict, trained = _lora_classifier(model, config, neurons, head, progress)
            adaptation = f"masked-lora:{config.mask}"
            target_setting = f"LoRA on {count} {config.mask} neurons, {trained}"
        result += _target_rows(model, predict, target, config, adaptation, target_setting, progress)
    return result
