import json
import math

import numpy as np
import pytest
import torch

from workbench import corpus
from workbench.artifacts import json_text
from workbench.evaluation.evaluate import EvaluationConfig, compute_baseline, evaluate
from workbench.evaluation.mass import delta_mass, language_mass, leakage
from workbench.evaluation.relevance import pooled_representations, retrieval_matches
from workbench.evaluation.scores import bootstrap_interval, harmonic_mean, wilson_interval
from workbench.evaluation.utility import (
    answer_costs,
    continuation_nll,
    normalised_log_probs,
    position_costs,
)
from workbench.interventions import PositionRule, add_vector
from workbench.prompting import QA_TEMPLATE


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).normal(2.0, 1.0, size=200)
    first = bootstrap_interval([values], np.mean, seed=3)
    assert first == bootstrap_interval([values], np.mean, seed=3)
    assert first[0] < values.mean() < first[1] and first[1] - first[0] < 0.5


def test_harmonic_mean_is_zero_when_either_rate_is_zero():
    assert harmonic_mean(0.0, 1.0) == 0.0 and harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(1.0, 0.25) == pytest.approx(0.4)


def test_position_costs_match_float64_nll_and_kl_over_a_gemma_sized_vocabulary():
    """The fused KL (one log-sum-exp, one dot product) against the textbook formula in float64, on logits the size
    and spread of Gemma's, with an edit large enough to move the argmax."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 262_144, generator=generator) * 3
    base[::2, :50] += 25  # a few dominant tokens, as most real next-token logits have; odd rows stay flat
    edited = base + torch.randn(6, 262_144, generator=generator) * torch.tensor([0.0, 0.01, 0.3, 1, 3, 10])[:, None]
    targets = torch.tensor([0, 7, 49, 1000, 5, 200_000])
    costs = position_costs(edited, targets, normalised_log_probs(base))
    base64, edited64 = base.double().log_softmax(-1), edited.double().log_softmax(-1)
    exact_kl = (base64.exp() * (base64 - edited64)).sum(-1)
    exact_nll = -edited64[torch.arange(6), targets]
    assert costs[0, 1].abs() < 1e-5 and exact_kl[1:].min() > 1e-5    # the same distribution costs nothing
    torch.testing.assert_close(costs[:, 1].double(), exact_kl, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(costs[:, 0].double(), exact_nll, atol=1e-5, rtol=1e-5)
    assert position_costs(edited, targets).shape == (6, 1)


def test_mass_delta_and_leakage():
    masks = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.bool)
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.1, 0.1, 0.1]]))
    torch.testing.assert_close(language_mass(logits, masks), torch.tensor([[0.7, 0.1, 0.1]]))
    steps = torch.tensor([[[0.2, 0.5, 0.1], [0.4, 0.3, 0.1]]])  # prompt x step x lang
    torch.testing.assert_close(delta_mass(steps, target_index=1, source_index=0), torch.tensor([0.1]))
    base = torch.tensor([[[0.2, 0.5, 0.3], [0.4, 0.3, 0.0]]])
    torch.testing.assert_close(leakage(steps, base, [2]), torch.tensor([0.0]))  # lost mass is not leakage
    torch.testing.assert_close(leakage(base, steps, [2]), torch.tensor([0.05]))


def test_retrieval_matches_on_planted_pairs():
    torch.manual_seed(0)
    prompts = torch.randn(20, 8)
    assert retrieval_matches(prompts, prompts + 0.1 * torch.randn(20, 8)).all()
    assert retrieval_matches(prompts, torch.randn(20, 8)).float().mean() < 0.5


SMALL = EvaluationConfig(max_new_tokens=16, n_utility_contexts=4, bootstrap_resamples=200, batch_size=8)


@pytest.fixture(scope="module")
def eval_prompts():
    return [QA_TEMPLATE.format(prompt=p.prompt) for p in corpus.prompts(split="eval", n=8)]


@pytest.mark.model
def test_unsteered_model_is_english_default_with_zero_edit_costs(gemma_fast, eval_prompts):
    baseline = compute_baseline(gemma_fast, eval_prompts, "hi", config=SMALL)
    metrics = evaluate(gemma_fast, eval_prompts, "hi", baseline=baseline, config=SMALL)
    assert metrics.delta_mass < 0 and metrics.delta_mass_ci[1] < 0       # English wins the early steps
    assert metrics.lid_success <= 0.25 and metrics.default_rate <= 0.25
    assert abs(metrics.kl) < 1e-5 and metrics.nll_delta == 0.0 and metrics.leakage_max == 0.0
    assert metrics.en_ppl_delta == 0.0
    payload = json.loads(json.dumps(metrics.to_dict()))
    keys = {"lid_success", "lid_success_first_tokens", "default_rate", "delta_mass", "leakage_max", "kl",
            "nll_delta", "en_ppl_delta", "relevance", "coherence", "steering_score", "steering_score_v1",
            "retrieval_relevance", "relevance_chance"}
    assert keys <= payload.keys() and all(f"{k}_ci" in payload for k in ("lid_success", "default_rate",
                                                                         "relevance", "coherence", "steering_score"))
    assert 0.0 <= metrics.relevance <= 1.0 and metrics.provenance["relevance"]["scorer"] == "e5-linear"
    record = metrics.records[0]
    assert "\nQ:" not in record["answer"] and record["output"].startswith(record["answer"])
    assert {"relevance", "coherent", "nll", "repeated_ngram_share", "lid_first_tokens"} <= record.keys()


@pytest.mark.model
def test_diffmean_steering_into_spanish_is_scored_as_controlled(gemma_fast, eval_prompts):
    from workbench.activations import batch_texts, harvest

    rows = corpus.parallel(["en", "es"], split="discovery", n=100)
    texts = {lang: [row.text[lang] for row in rows] for lang in ("en", "es")}
    stats = harvest(gemma_fast, batch_texts(gemma_fast.tokenizer, texts, batch_size=16),
                    ["blocks.6.hook_resid_post"], progress=False)
    vector = (stats.mean("blocks.6.hook_resid_post", "es") - stats.mean("blocks.6.hook_resid_post", "en"))
    hook = add_vector(gemma_fast, "blocks.6.hook_resid_post", vector)
    metrics = evaluate(gemma_fast, eval_prompts, "es", hooks=[hook], config=SMALL)
    assert metrics.lid_success >= 0.75, [r["output"] for r in metrics.records]
    assert metrics.delta_mass > 0 and metrics.default_rate >= 0.6
    assert metrics.kl > 0.05                                  # next-token distributions over the answers moved
    assert metrics.nll_delta < 0.3 and metrics.en_ppl_delta > 100  # Spanish answers cost little; English ones pay
    assert metrics.retrieval_relevance > metrics.relevance_chance
    assert metrics.coherence >= 0.5 and metrics.relevance > 0.2     # Spanish answers, mostly readable and on topic
    assert metrics.steering_score > 0 and not math.isnan(metrics.steering_score_v1)
    again = evaluate(gemma_fast, eval_prompts, "es", hooks=[hook], config=SMALL)  # its own fresh baseline
    assert json_text(again.to_dict()) == json_text(metrics.to_dict())  # the same run twice: byte-identical


@pytest.mark.model
def test_retrieval_relevance_finds_translations_and_separates_real_from_shuffled_answers(gemma_fast):
    rows = corpus.parallel(["en", "es", "hi"], split="eval", n=60)
    english = pooled_representations(gemma_fast, [row.text["en"] for row in rows], 12)
    for lang, floor in (("es", 0.6), ("hi", 0.35)):
        translated = pooled_representations(gemma_fast, [row.text[lang] for row in rows], 12)
        assert retrieval_matches(english, translated).float().mean() >= floor     # chance is 1/60
    prompts = [QA_TEMPLATE.format(prompt=p.prompt) for p in corpus.prompts(split="dev", n=24)]
    answers = [p.reference["en"] for p in corpus.prompts(split="dev", n=24)]
    prompt_vectors = pooled_representations(gemma_fast, prompts, 12)
    real = retrieval_matches(prompt_vectors, pooled_representations(gemma_fast, answers, 12)).float().mean()
    shuffled = retrieval_matches(prompt_vectors,
                                 pooled_representations(gemma_fast, answers[1:] + answers[:1], 12)).float().mean()
    assert real >= 0.3 and real > shuffled + 0.2


@pytest.mark.model
def test_llm_judge_plugs_into_evaluate_as_relevance(gemma_fast, eval_prompts):
    from workbench.evaluation.relevance import llm_judge

    judge = llm_judge(gemma_fast)
    verdicts = judge(eval_prompts[:3], ["An array is a set of cells.", "", "Bonjour"])
    assert len(verdicts) == 3 and verdicts[1] is False and all(isinstance(v, bool) for v in verdicts)
    metrics = evaluate(gemma_fast, eval_prompts[:4], "es", judge=judge, config=SMALL)
    assert metrics.provenance["relevance"] == {"scorer": "judge"}
    assert set(record["relevance"] for record in metrics.records) <= {0.0, 1.0}


@pytest.fixture(scope="module")
def hindi_contexts():
    pairs = corpus.qa_pairs("hi", split="dev", n=6)
    return [QA_TEMPLATE.format(prompt=p.question) for p in pairs], [" " + p.answer for p in pairs]


@pytest.mark.model
def test_answer_costs_are_zero_without_an_edit_and_match_the_continuation_nll(gemma_fast, hindi_contexts):
    prompts, answers = hindi_contexts
    costs = answer_costs(gemma_fast, prompts, answers, reference_prompts=prompts, skip_tokens=3)
    assert costs.kl.abs().max() < 1e-5
    torch.testing.assert_close(costs.nll, continuation_nll(gemma_fast, prompts, answers, skip_tokens=3))
    rewritten = answer_costs(gemma_fast, [p.replace("\nA:", " Answer in Hindi.\nA:") for p in prompts], answers,
                             reference_prompts=prompts, skip_tokens=3)
    assert rewritten.kl.min() > 0                            # another question moves every answer's distributions


@pytest.mark.model
def test_a_batch_of_empty_answers_costs_nan_not_an_error(gemma_fast, hindi_contexts):
    """A strong edit can make every answer of a batch empty (the demo's Hindi sweep at x4 did)."""
    prompts, answers = hindi_contexts
    costs = answer_costs(gemma_fast, prompts, ["", "", *answers[2:]], reference_prompts=prompts, batch_size=2)
    assert costs.nll[:2].isnan().all() and costs.kl[:2].isnan().all()
    assert not costs.nll[2:].isnan().any() and costs.kl[2:].abs().max() < 1e-5
    assert continuation_nll(gemma_fast, prompts[:2], ["", ""]).isnan().all()
    kept = answer_costs(gemma_fast, prompts[:2], ["", ""], keep_log_probs=True, batch_size=2)
    assert kept.log_probs[0].shape == (0, gemma_fast.cfg.d_vocab)


@pytest.mark.model
def test_an_edit_of_the_prompt_final_positions_costs_kl_and_nll_on_the_answers(gemma_fast, hindi_contexts):
    """The old utility measure read only the last prompt position's logit, dropped under ``final+k``: 0 cost."""
    prompts, answers = hindi_contexts
    base = answer_costs(gemma_fast, prompts, answers, skip_tokens=3)
    vector = 80 * torch.nn.functional.normalize(torch.randn(gemma_fast.cfg.d_model,
                                                            generator=torch.Generator().manual_seed(0)), dim=0)
    kl = {}
    for rule in ("final+2", "all"):
        hook = add_vector(gemma_fast, "blocks.6.hook_resid_post", vector, rule=PositionRule.parse(rule))
        edited = answer_costs(gemma_fast, prompts, answers, hooks=[hook], reference_prompts=prompts, skip_tokens=3)
        kl[rule] = float(edited.kl.mean())
        assert (edited.nll - base.nll).abs().mean() > 0.01, rule  # tokens after the edited ones pay too
    assert 0.05 < kl["final+2"] < kl["all"]                       # editing every position costs more


@pytest.mark.model
def test_kept_reference_log_probs_give_the_same_kl_as_recomputing_them(gemma_fast, hindi_contexts):
    """The baseline keeps the unsteered answer log-probs once; every steered run's KL reuses them."""
    prompts, answers = hindi_contexts
    reference = answer_costs(gemma_fast, prompts, answers, keep_log_probs=True, batch_size=4)
    assert len(reference.log_probs) == 2 and all(part.shape[1] == gemma_fast.cfg.d_vocab
                                                 for part in reference.log_probs)
    hook = add_vector(gemma_fast, "blocks.6.hook_resid_post", 60 * torch.nn.functional.normalize(
        torch.randn(gemma_fast.cfg.d_model, generator=torch.Generator().manual_seed(1)), dim=0))
    recomputed = answer_costs(gemma_fast, prompts, answers, hooks=[hook], reference_prompts=prompts, batch_size=4)
    reused = answer_costs(gemma_fast, prompts, answers, hooks=[hook], reference_prompts=prompts, batch_size=4,
                          reference_log_probs=reference.log_probs)
    assert recomputed.kl.min() > 0.01
    torch.testing.assert_close(reused.kl, recomputed.kl)
    torch.testing.assert_close(reused.nll, recomputed.nll)
    with pytest.raises(ValueError, match="one tensor per batch"):
        answer_costs(gemma_fast, prompts, answers, hooks=[hook], reference_prompts=prompts, batch_size=2,
                     reference_log_probs=reference.log_probs)
