"""The transfer study's parts without the real model: tasks from the shipped corpus, loaders on tiny local files,
the probe, rate-matched random neurons, masked LoRA on a tiny Gemma 3, chrF / BLEU, the report and bad input."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import tiny_gemma3

from workbench import corpus
from workbench.corpus import CorpusError
from workbench.neurons.interventions import random_like
from workbench.transfer.compare import compare_items, compare_runs, read_items, write_comparison
from workbench.transfer.loaders import load_belebele, load_xnli
from workbench.transfer.probe import fit_probe
from workbench.transfer.report import leaderboard, write_transfer
from workbench.transfer.study import (
    TransferConfig,
    TransferError,
    TransferItem,
    TransferResult,
    TransferRow,
    check_config,
)
from workbench.transfer.tasks import (
    MODULES,
    TaskError,
    module_rows,
    module_training_rows,
    translation_items,
    translation_prompt,
)
from workbench.transfer.translate import bleu_tokenizer, corpus_bleu, sentence_chrf


def test_module_rows_are_paired_labelled_and_split_by_document():
    train = module_training_rows(400)
    assert len(train) == 400 and {row.label for row in train} == set(MODULES)
    counts = Counter(row.label for row in train)
    assert max(counts.values()) == 50  # 400 / 8 classes: every class has enough discovery rows to fill its share
    assert {row.id for row in train} <= {row.id for row in corpus.parallel(["en"], "discovery")}
    hindi = module_rows("hi", "eval", n=100)
    assert len(hindi) == 100 and all(set(row.text) == {"en", "hi"} for row in hindi)
    assert {row.source for row in hindi} == {"lo-help"}
    assert not {row.id for row in hindi} & {row.id for row in train}
    arabic = module_rows("ar", "eval", n=50)  # no Arabic help text ships: aligned UI strings, same labels
    assert {row.source for row in arabic} == {"lo-ui"} and {row.label for row in arabic} <= set(MODULES)
    assert "sdraw" not in {row.label for row in module_rows("de", "eval")}  # merged into simpress
    with pytest.raises(TaskError, match="other than en"):
        module_rows("en")


def test_translation_prompt_and_scores():
    items = translation_items("es", "dev", n=3)
    prompt = translation_prompt(items[:2], items[2], "es")
    assert prompt.count("English: ") == 3 and prompt.endswith("Spanish:")
    assert items[0].reference in prompt and items[2].reference not in prompt
    same = sentence_chrf([items[0].reference], [items[0].reference])
    other = sentence_chrf([items[1].reference], [items[0].reference])
    assert same[0] == pytest.approx(100) and other[0] < 50
    assert corpus_bleu([items[0].reference], [items[0].reference], "es") == pytest.approx(100)
    assert (bleu_tokenizer("zh"), bleu_tokenizer("ja"), bleu_tokenizer("hi")) == ("zh", "char", "13a")


def test_xnli_and_belebele_from_local_files(tmp_path):
    (tmp_path / "hi").mkdir()
    records = [{"premise": "p1", "hypothesis": "h1", "label": 0}, {"premise": "p2", "hypothesis": "h2", "label": 2}]
    (tmp_path / "hi" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    items = load_xnli("hi", source=tmp_path)
    assert [(i.premise, i.label) for i in items] == [("p1", "entailment"), ("p2", "contradiction")]
    (tmp_path / "xnli.dev.tsv").write_text("language\tgold_label\tsentence1\tsentence2\n"
                                           "zh\tneutral\t前提\t假设\nhi\tentailment\ta\tb\n", encoding="utf-8")
    (item,) = load_xnli("zh", "dev", source=tmp_path)
    assert (item.premise, item.hypothesis, item.label) == ("前提", "假设", "neutral")
    (tmp_path / "hin_Deva.jsonl").write_text(json.dumps({
        "link": "x", "question_number": 1, "flores_passage": "P", "question": "Q", "mc_answer1": "a",
        "mc_answer2": "b", "mc_answer3": "c", "mc_answer4": "d", "correct_answer_num": "3"}), encoding="utf-8")
    (question,) = load_belebele("hi", source=tmp_path)
    assert question.answers[question.correct] == "c"
    with pytest.raises(CorpusError, match="zho_Hans.jsonl"):
        load_belebele("zh", source=tmp_path)
    (tmp_path / "hi" / "train.jsonl").write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": 7}))
    with pytest.raises(CorpusError, match="label 7"):
        load_xnli("hi", "train", source=tmp_path)


def test_probe_keeps_the_layer_that_separates_on_dev():
    generator = torch.Generator().manual_seed(0)
    labels = ["a", "b"] * 40
    signal = torch.tensor([1.0 if label == "a" else -1.0 for label in labels])
    noise = torch.randn(2, 80, 6, generator=generator)
    features = noise.clone()
    features[1, :, 0] += 3 * signal  # layer 7 carries the class, layer 3 does not
    probe = fit_probe(features[:, :40], labels[:40], features[:, 40:], labels[40:], [3, 7])
    assert probe.layer == 7 and probe.dev_accuracy[7] == 1.0 and probe.dev_accuracy[3] < 0.8
    assert probe.correct(features[1, 40:], labels[40:]).all()


def test_probe_layers_outside_the_model_are_refused(tiny_model):
    from workbench.transfer.probe import ProbeConfig, ProbeError, probe_layers

    assert probe_layers(tiny_model, ProbeConfig()) == (0, 1)
    assert probe_layers(tiny_model, ProbeConfig(layers=(1,))) == (1,)
    with pytest.raises(ProbeError, match=r"lie in 0..1"):
        probe_layers(tiny_model, ProbeConfig(layers=(0, 17)))


def test_random_neurons_match_count_per_layer_and_activation_probability():
    generator = torch.Generator().manual_seed(0)
    rates = torch.rand(3, 400, generator=generator) ** 4  # mostly quiet neurons, like a real MLP
    selected = torch.zeros(3, 400, dtype=torch.bool)
    selected[0, rates[0].argsort()[-5:]] = True  # the most active neurons of layer 0
    selected[2, :3] = True
    exclude = torch.zeros_like(selected)
    exclude[0, rates[0].argsort()[-12:-5]] = True
    drawn = random_like(selected, exclude=exclude, rates=rates, generator=generator)
    assert drawn.sum(-1).tolist() == selected.sum(-1).tolist()
    assert not (drawn & (selected | exclude)).any()
    uniform = random_like(selected, exclude=exclude, generator=torch.Generator().manual_seed(1))
    log_gap = (rates[0][drawn[0]].log().mean() - rates[0][selected[0]].log().mean()).abs()
    uniform_gap = (rates[0][uniform[0]].log().mean() - rates[0][selected[0]].log().mean()).abs()
    assert log_gap < 0.5 < uniform_gap


@pytest.fixture(scope="module")
def tiny_gemma():
    from workbench.hf_backend import HFHookedModel
    from workbench.models import load_tokenizer

    tokenizer = load_tokenizer()
    return HFHookedModel(tiny_gemma3(tokenizer), tokenizer, "tiny-gemma3")


def test_masked_lora_changes_only_the_selected_neurons(tiny_gemma):
    from workbench.backends import adapted_copy
    from workbench.transfer.lora import LoraTrainConfig, attach_lora, classify, effective_weight, train_classifier

    neurons = torch.zeros(2, 32, dtype=torch.bool)
    neurons[0, [1, 5, 7]] = True
    neurons[1, [0, 31]] = True
    config = LoraTrainConfig(rank=4, steps=6, batch_size=4, learning_rate=1e-2, max_length=16)
    adapted = adapted_copy(tiny_gemma, lambda hf_model: attach_lora(hf_model, config, neurons))
    texts = ["Click the cell.", "Insert a table here.", "Choose Format - Page.", "Open the Basic IDE."] * 3
    labels = ["calc", "writer"] * 6
    classifier = train_classifier(adapted, texts, labels, ["calc", "writer"], config, progress=False)
    for layer in range(2):
        keep, base = neurons[layer], tiny_gemma.hf_model.model.layers[layer].mlp
        mlp = adapted.hf_model.model.layers[layer].mlp
        for name in ("gate_proj", "up_proj"):
            weight, original = effective_weight(getattr(mlp, name)), getattr(base, name).weight
            assert torch.equal(weight[~keep], original[~keep])  # bit-identical after 6 optimiser steps
            assert (weight[keep] != original[keep]).all(-1).any()  # the selected neurons did learn
        weight, original = effective_weight(mlp.down_proj), base.down_proj.weight
        assert torch.equal(weight[:, ~keep], original[:, ~keep])
        assert (weight[:, keep] != original[:, keep]).any()
    captured = {}
    encoded = tiny_gemma.tokenizer(["Insert a table here."], return_tensors="pt")
    for key, model in (("base", tiny_gemma), ("adapted", adapted)):  # hook points see the adapted projections
        with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_pre", lambda a, hook, key=key: captured.setdefault(key, a))]):
            model(encoded["input_ids"], attention_mask=encoded["attention_mask"])
    changed = (captured["base"] - captured["adapted"]).abs().amax((0, 1)).nonzero().flatten().tolist()
    assert changed == [1, 5, 7]
    assert set(classify(classifier, texts[:4], max_length=16)) <= {"calc", "writer"}


def test_full_lora_changes_every_neuron_and_a_wrong_mask_is_refused(tiny_gemma):
    from workbench.backends import adapted_copy
    from workbench.transfer.lora import AdapterError, LoraTrainConfig, attach_lora, effective_weight, train_classifier

    config = LoraTrainConfig(rank=2, steps=3, batch_size=2, learning_rate=1e-2, max_length=8)
    adapted = adapted_copy(tiny_gemma, lambda hf_model: attach_lora(hf_model, config))
    train_classifier(adapted, ["a b", "c d"], ["x", "y"], ["x", "y"], config, progress=False)
    weight = effective_weight(adapted.hf_model.model.layers[1].mlp.up_proj)
    assert (weight != tiny_gemma.hf_model.model.layers[1].mlp.up_proj.weight).any(-1).all()
    with pytest.raises(AdapterError, match="2 layers of 32 neurons"):
        adapted_copy(tiny_gemma, lambda hf_model: attach_lora(hf_model, config, torch.zeros(3, 32, dtype=torch.bool)))
    with pytest.raises(AdapterError, match="not among the classes"):
        train_classifier(adapted, ["a"], ["z"], ["x", "y"], config, progress=False)


def test_pooled_means_batched_by_length_come_back_in_input_order(tiny_gemma):
    from workbench.readouts import length_sorted_batches, pooled_means

    texts = ["A much longer help paragraph about inserting tables into a text document.", "Short.",
             "Choose Format - Page.", "x", "Open the Basic IDE and run the macro you recorded."]
    batches = length_sorted_batches(tiny_gemma.tokenizer, texts, batch_size=2, max_length=32)
    assert sorted(index for indices, _, _ in batches for index in indices) == list(range(len(texts)))
    assert [tokens.shape[1] for _, tokens, _ in batches] == sorted(tokens.shape[1] for _, tokens, _ in batches)
    names = ["blocks.1.hook_resid_post"]
    batched = pooled_means(tiny_gemma, texts, names, batch_size=2, max_length=32, progress=False)
    alone = torch.cat([pooled_means(tiny_gemma, [text], names, max_length=32, progress=False) for text in texts], 1)
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("classes", [["calc", "writer"], ["calc", "writer", "impress", "math"]])
def test_the_linear_probe_head_predicts_as_the_logistic_regression_dev_chose(tiny_gemma, classes):
    from sklearn.linear_model import LogisticRegression

    from workbench.backends import adapted_copy
    from workbench.transfer.lora import (
        LoraTrainConfig,
        PooledClassifier,
        attach_lora,
        classify,
        fit_linear_head,
        train_classifier,
    )

    texts = ["Click the cell.", "Insert a table here.", "Choose Format - Page.", "Open the Basic IDE.",
             "Sum the column.", "Add a footnote.", "Start the slide show.", "Type the formula."]
    labels = [classes[i % len(classes)] for i in range(len(texts))]
    dev_texts, dev_labels = texts[::-1], labels[::-1]
    with torch.inference_mode():
        features = torch.cat([PooledClassifier(tiny_gemma, classes).pooled(*_encoded(tiny_gemma, [text]))
                              for text in texts]).numpy()
    config = LoraTrainConfig(rank=2, steps=0, max_length=16, head_inverse_regularisations=(1e-12, 10.0))
    head = fit_linear_head(tiny_gemma, texts, labels, dev_texts, dev_labels, classes + ["unused"], config,
                           progress=False)
    # the one-standard-error rule: the smallest C whose dev accuracy is within one SE of the best
    best = max(head.dev_accuracy.values())
    within = [c for c, accuracy in head.dev_accuracy.items() if accuracy >= best - (best * (1 - best) / 8) ** 0.5]
    assert set(head.dev_accuracy) == {1e-12, 10.0} and head.inverse_regularisation == min(within)
    expected = LogisticRegression(C=head.inverse_regularisation, max_iter=3000).fit(features, labels).predict(features)
    adapted = adapted_copy(tiny_gemma, lambda hf_model: attach_lora(hf_model, config))
    classifier = train_classifier(adapted, texts, labels, classes + ["unused"], config, head=head, progress=False)
    assert classify(classifier, texts, max_length=16, batch_size=1) == list(expected)
    assert (expected == np.asarray(labels)).mean() > 0.5


def _encoded(model, texts):
    encoded = model.tokenizer(texts, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def _rows() -> list[TransferRow]:
    rows = []
    for language, accuracy in (("hi", 0.4), ("es", 0.6)):
        rows += [TransferRow("module", "probe", "none", language, "accuracy", accuracy, accuracy - 0.1,
                             accuracy + 0.1, 96, "layer 12; rows: lo-help"),
                 TransferRow("module", "probe", "lape-zero", language, "accuracy", accuracy - 0.05, accuracy - 0.15,
                             accuracy + 0.05, 96, "120 neurons"),
                 TransferRow("module", "probe", "lape-zero", language, "delta_accuracy", -0.05, -0.09, -0.01, 96,
                             "120 neurons"),
                 TransferRow("module", "probe", "none", language, "english_accuracy", 0.7, 0.6, 0.8, 96),
                 TransferRow("module", "probe", "none", language, "transfer_gap", 0.7 - accuracy, 0.2, 0.4, 96)]
    return rows


def test_report_writes_results_leaderboard_and_figures(tmp_path):
    import pandas as pd

    text = leaderboard(_rows())
    assert "| method | hi (n=96) | es (n=96) |" in text
    assert "0.350 [0.250, 0.450]; Δ -0.050 [-0.090, -0.010]" in text
    assert "*transfer_gap*" in text and "layer 12; rows: lo-help" in text
    items = _items("probe", np.arange(96) % 2)
    out = write_transfer(TransferResult(tuple(_rows()), items), TransferConfig(targets=("hi", "es")), tmp_path)
    frame = pd.read_csv(out / "results.csv")
    assert {"task", "adaptation", "method", "language", "metric", "value", "ci_low", "ci_high", "n"} <= set(frame)
    assert len(frame) == 10
    for name in ("module_scores", "transfer_gap"):
        assert (out / f"{name}.html").stat().st_size > 1000 and (out / f"{name}.png").stat().st_size > 1000
    assert read_items(out) == list(items)  # ids such as "0001" stay strings


def test_balanced_accuracy_gives_a_collapsed_classifier_chance_only():
    from sklearn.metrics import balanced_accuracy_score

    from workbench.transfer.module_task import balanced_accuracy

    rng = np.random.default_rng(0)
    gold = rng.choice(["shared", "scalc", "smath"], size=300, p=[0.6, 0.3, 0.1])
    classes = np.unique(gold, return_inverse=True)[1]
    collapsed = np.full(300, "shared")
    assert (collapsed == gold).mean() > 0.5
    assert balanced_accuracy((collapsed == gold).astype(float), classes) == pytest.approx(1 / 3)
    noisy = np.where(rng.random(300) < 0.7, gold, "scalc")
    assert balanced_accuracy((noisy == gold).astype(float), classes) == pytest.approx(
        balanced_accuracy_score(gold, noisy))


def _items(adaptation: str, correct: np.ndarray, language: str = "hi") -> tuple[TransferItem, ...]:
    return tuple(TransferItem("module", adaptation, "none", language, "accuracy", f"{index:04d}", float(score))
                 for index, score in enumerate(correct))


def test_two_runs_compare_item_by_item_with_a_paired_interval(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.random(200) < 0.5
    second = first.copy()
    second[:12] = True  # the second run gets up to 12 more items right and changes nothing else
    gain = float(second.mean() - first.mean())
    (row,) = compare_items(_items("masked-lora:random-lape", second), _items("masked-lora:lape", first))
    assert row.first == "masked-lora:random-lape" and row.n == 200
    assert row.difference == pytest.approx(gain) == pytest.approx(row.first_value - row.second_value)
    assert 0 <= row.ci_low <= gain <= row.ci_high < 0.1  # unpaired, two ~0.07-wide intervals would overlap
    (shifted,) = compare_items(_items("a", first), _items("b", second[:50]))
    assert shifted.n == 50  # only the items both runs scored
    with pytest.raises(TransferError, match="share no"):
        compare_items(_items("a", first), _items("b", second, language="es"))
    for name, correct in (("lape", first), ("random", second)):
        write_transfer(TransferResult(tuple(_rows()), _items(f"masked-lora:{name}", correct)),
                       TransferConfig(targets=("hi",)), tmp_path / name)
    (row,) = compare_runs(tmp_path / "random", tmp_path / "lape")
    assert row.first == "masked-lora:random (random)" and row.difference == pytest.approx(gain)
    out = write_comparison([row], tmp_path / "compare")
    assert "masked-lora:random (random) minus masked-lora:lape (lape)" in (out / "comparison.md").read_text()
    with pytest.raises(TransferError, match="does not exist"):
        read_items(tmp_path / "nowhere")


@pytest.mark.parametrize(("changes", "message"), [
    ({"task": "qa"}, "unknown task 'qa'"),
    ({"adaptation": "full"}, "unknown adaptation 'full'"),
    ({"interventions": ("none", "lape-max")}, "unknown interventions \\['lape-max'\\]"),
    ({"mask": "ap95"}, "unknown mask 'ap95'"),
    ({"targets": ("en", "hi")}, "other than en"),
    ({"task": "translate", "adaptation": "lora"}, "translate uses the base model"),
])
def test_bad_transfer_configs_fail_before_any_model_work(changes, message):
    with pytest.raises(TransferError, match=message):
        check_config(TransferConfig(**changes))


def test_sentence_chrf_is_per_item():
    scores = sentence_chrf(["the cat sat", "completely different"], ["the cat sat", "the cat sat"])
    assert scores.shape == (2,) and scores[0] > scores[1] and np.isfinite(scores).all()
