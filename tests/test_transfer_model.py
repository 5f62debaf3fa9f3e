"""The transfer study on the real embedded model, at small sizes: an English-only probe classifies Spanish help text
above chance, the rows are consistent with each other, interventions touch the neurons they claim, and the model's
few-shot translations are closer to their own references than to other items'."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.neurons.data import TokenDataConfig
from workbench.transfer.interventions import TransferInterventionConfig, build_intervention
from workbench.transfer.run import run_transfer
from workbench.transfer.study import TransferConfig

pytestmark = [pytest.mark.model, pytest.mark.slow]

NEURONS = TransferInterventionConfig(languages=("en", "es", "hi"), tokens=TokenDataConfig(tokens_per_language=4000),
                                     clas_alphas=(-0.5, 0.5))


def _row(rows, method: str, metric: str):
    (row,) = [row for row in rows if row.method == method and row.metric == metric]
    return row


def _value(rows, method: str, metric: str) -> float:
    return _row(rows, method, metric).value


def test_an_english_probe_transfers_to_spanish_and_every_row_adds_up(gemma_fast):
    config = TransferConfig(targets=("es",), interventions=("none", "lape-zero", "random-lape-zero"), n_train=160,
                            n_dev=32, n_eval=64, neurons=NEURONS)
    result = run_transfer(gemma_fast, config, progress=False)
    rows = result.rows
    accuracy = {row.method: row for row in rows if row.metric == "accuracy"}
    assert set(accuracy) == {"none", "lape-zero", "random-lape-zero"}
    assert all(row.n == 64 and row.ci_low <= row.value <= row.ci_high for row in rows)
    assert accuracy["none"].ci_low > 1 / 8  # eight classes: the probe learned modules, not languages
    english, gap = _value(rows, "none", "english_accuracy"), _value(rows, "none", "transfer_gap")
    assert gap == pytest.approx(english - accuracy["none"].value)
    for method in ("lape-zero", "random-lape-zero"):
        assert _value(rows, method, "delta_accuracy") == pytest.approx(accuracy[method].value
                                                                       - accuracy["none"].value)
    assert 0 < _value(rows, "none", "majority_share") < 1
    for (method, metric), row in {**{(m, "accuracy"): r for m, r in accuracy.items()},
                                  ("none", "english_accuracy"): _row(rows, "none", "english_accuracy")}.items():
        scores = [item.score for item in result.items if item.method == method and item.metric == metric]
        assert len(scores) == 64 and np.mean(scores) == pytest.approx(row.value)  # the items behind every rate
    balanced = {row.method: row.value for row in rows if row.metric == "balanced_accuracy"}
    assert set(balanced) == set(accuracy) and 1 / 8 < balanced["none"] <= 1
    assert _value(rows, "lape-zero", "delta_balanced_accuracy") == pytest.approx(balanced["lape-zero"]
                                                                                  - balanced["none"])
    lape = build_intervention(gemma_fast, "lape-zero", "es", NEURONS, progress=False)
    random = build_intervention(gemma_fast, "random-lape-zero", "es", NEURONS, progress=False)
    assert lape.n_neurons == random.n_neurons > 0
    lape_units = {(i.layer, int(u)) for i in lape.interventions for u in i.edit.units}
    random_units = {(i.layer, int(u)) for i in random.interventions for u in i.edit.units}
    assert not lape_units & random_units
    assert sorted(layer for layer, _ in lape_units) == sorted(layer for layer, _ in random_units)


def test_few_shot_translations_match_their_own_references(gemma_fast):
    from workbench.transfer.tasks import translation_items
    from workbench.transfer.translate import sentence_chrf, translate

    shots = translation_items("es", "dev", n=2)
    items = translation_items("es", "eval", n=8)
    outputs = translate(gemma_fast, items, shots, "es", max_new_tokens=40)
    references = [item.reference for item in items]
    own = sentence_chrf(outputs, references)
    others = sentence_chrf(outputs, references[1:] + references[:1])
    assert all(output and "\n" not in output for output in outputs)
    assert own.mean() > others.mean() + 10 and np.median(own) > 25
