import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from workbench import corpus
from workbench.bench import BenchConfig, BenchError, run_bench
from workbench.calibration import CalibrationConfig, calibrate, choose, kept_layer
from workbench.cli import app
from workbench.errors import WorkbenchError
from workbench.evaluation import QA_TEMPLATE, EvaluationConfig, identify_language
from workbench.generation import generate
from workbench.interventions import PositionRule, hooks_for, prompt_ends
from workbench.methods import MethodError, fingerprint_digest, get_method, get_methods, method_names
from workbench.prompting import NATIVE_INSTRUCTIONS, english_instruction, native_instruction, with_instruction


def test_prompting_instructions_cover_every_corpus_language_and_sit_before_the_answer():
    assert {language.code for language in corpus.languages()} <= set(NATIVE_INSTRUCTIONS)
    assert english_instruction("hi") == "Answer in Hindi." and english_instruction("zh") == "Answer in Chinese."
    assert native_instruction("es")[0] == "Responde en español."
    assert with_instruction("Q: How do I save?\nA:", "Answer in Hindi.") == "Q: How do I save? Answer in Hindi.\nA:"
    assert with_instruction("Tell me a story.", "Answer in Hindi.") == "Tell me a story. Answer in Hindi."
    with pytest.raises(WorkbenchError, match="xx"):
        native_instruction("xx")


def test_registry_lists_builtins_and_rejects_unknown_names_with_the_known_ones():
    assert {"none", "prompt-en", "prompt-native", "diffmean", "pca", "lda", "probe"} <= set(method_names())
    with pytest.raises(MethodError, match="known: none, prompt-en"):
        get_method("diffmaen")
    with pytest.raises(MethodError, match="'foo'"):
        get_methods(["none", "foo"])


def test_fingerprints_key_caches_by_what_each_method_is_built_from():
    from workbench.neurons.methods import LapeSteering

    digests = {name: fingerprint_digest(get_method(name)) for name in method_names()}
    assert {"lape", "clas"} <= set(digests) and len(set(digests.values())) == len(digests)
    assert fingerprint_digest(get_method("pca")) == digests["pca"]  # stable
    assert fingerprint_digest(LapeSteering(value="p90")) != digests["lape"]


def test_calibration_picks_the_best_admissible_setting_and_flags_when_none_is():
    config = CalibrationConfig(max_nll_delta=0.5, max_kl=None, max_leakage=None)
    rows = [{"layer": 4, "strength": 1.0, "steering_score": 0.9, "lid_success": 1.0, "nll_delta": 1.2, "kl": 1.0},
            {"layer": 6, "strength": 1.0, "steering_score": 0.6, "lid_success": 0.8, "nll_delta": 0.1, "kl": 0.5},
            {"layer": 6, "strength": 0.5, "steering_score": 0.6, "lid_success": 0.8, "nll_delta": 0.0, "kl": 0.2}]
    chosen, admissible = choose(rows, config.fixed_bounds())
    assert admissible and (chosen["layer"], chosen["strength"]) == (6, 0.5)   # tie -> the weaker edit
    chosen, admissible = choose(rows, CalibrationConfig(max_nll_delta=0.5, max_kl=0.1, max_leakage=None).fixed_bounds())
    assert not admissible and chosen["strength"] == 0.5 and chosen["nll_delta"] == 0.0


def test_a_bench_target_without_utility_contexts_is_refused_before_any_model_work(tiny_model):
    from workbench.foxp2.pipeline import run_foxp2

    with pytest.raises(WorkbenchError, match=r"no 'ar' question/answer contexts in split 'dev'.*hi"):
        BenchConfig(targets=("es", "ar"))
    with pytest.raises(WorkbenchError, match="no 'ar' question/answer contexts"):
        run_foxp2(tiny_model, "ar", "unused")                # refused before the stages run


def test_the_kept_layer_is_the_best_score_then_lid_then_the_largest_mass_gain():
    rows = [{"layer": layer, "steering_score": 0.0, "lid_success": 0.0, "delta_mass": dm, "kl": kl}
            for layer, dm, kl in ((2, -0.5, 0.01), (6, -0.1, 0.3), (10, -0.4, 0.02))]
    assert kept_layer(rows) == 6                                  # nothing switches: the layer that moves mass most
    rows.append({"layer": 14, "steering_score": 0.0, "lid_success": 0.1, "delta_mass": -0.9, "kl": 2.0})
    assert kept_layer(rows) == 14
    rows.append({"layer": 4, "steering_score": 0.3, "lid_success": 0.05, "delta_mass": -0.9, "kl": 2.0})
    assert kept_layer(rows) == 4


def test_every_method_is_calibrated_by_the_trust_region_within_native_prompting_s_cost_by_default():
    config = CalibrationConfig()
    assert config.strategy == "trust-region" and config.bounds_from == "prompt-native"
    assert config.fixed_bounds() == {"leakage_max": 0.08, "kl": 0.08, "nll_delta": 0.03}
    assert config.n_prompts >= 48
    with pytest.raises(WorkbenchError, match="unknown calibration strategy 'trust'"):
        CalibrationConfig(strategy="trust")


def test_foxp2_and_its_controls_are_registered_methods(tiny_model):
    from workbench.foxp2.config import CONTROLS

    names = set(method_names())
    assert {"foxp2", *(f"foxp2-{control}" for control in CONTROLS)} <= names
    control = get_method("foxp2-random-support")
    assert (control.name, control.variant, control.layer_grid(tiny_model)) == ("foxp2-random-support", "random-support",
                                                                        [None])
    assert fingerprint_digest(control) != fingerprint_digest(get_method("foxp2"))


def test_bench_config_fails_early():
    with pytest.raises(WorkbenchError, match="xx"):
        BenchConfig(targets=("xx",))
    with pytest.raises(BenchError, match="not among methods"):
        BenchConfig(methods=("none",), sweep_methods=("diffmean",))
    with pytest.raises(WorkbenchError, match="position rule"):
        BenchConfig(rule="middle")


def test_steer_cli_rejects_bad_input_before_loading_a_model():
    runner = CliRunner()
    result = runner.invoke(app, ["steer", "--target", "xx", "--prompt", "hi"])
    assert result.exit_code != 0 and "xx" in str(result.exception)
    result = runner.invoke(app, ["steer", "--target", "hi", "--method", "nope", "--prompt", "hi"])
    assert "unknown steering method" in str(result.exception)
    result = runner.invoke(app, ["steer", "--target", "hi"])
    assert "no prompts" in str(result.exception)


# ------------------------------------------------------------------------------------------ on the real model

SMALL_CALIBRATION = CalibrationConfig(n_prompts=6, max_new_tokens=10, n_utility_contexts=4, layers=(4, 6),
                                      strengths=(0.5, 1.0), max_kl=2.0, max_nll_delta=0.5, max_leakage=0.5)


@pytest.mark.model
def test_diffmean_calibrated_on_dev_steers_eval_prompts_into_spanish(gemma_fast, small_diffmean):
    method = small_diffmean
    calibration = calibrate(gemma_fast, method, "es", config=SMALL_CALIBRATION, use_cache=False, progress=False)
    assert calibration.layer in (4, 6) and calibration.strength in (0.5, 1.0)
    assert len(calibration.sweep) == 3                      # 2 layers at the reference strength + 1 more strength
    assert calibration.strategy == "trust-region" and calibration.bounds["kl"] >= 2.0
    at_layer = [row for row in calibration.sweep if row["layer"] == calibration.layer]
    inside = [row["strength"] for row in at_layer if row["within_bounds"]]
    assert calibration.admissible and calibration.strength == max(inside)   # the strongest setting within bounds
    prompts = [QA_TEMPLATE.format(prompt=p.prompt) for p in corpus.prompts(split="eval", n=4)]
    treatment = method.treatment(gemma_fast, "es", "en", layer=calibration.layer, strength=calibration.strength,
                                 rule=PositionRule())
    outputs = generate(gemma_fast, prompts, hooks=hooks_for(gemma_fast, treatment.interventions), max_new_tokens=16)
    assert identify_language(outputs, candidates=["en", "es", "hi"]).count("es") >= 3, outputs


@pytest.mark.model
def test_position_rule_final_plus_k_is_consistent_between_cached_generation_and_a_full_forward(gemma_fast,
                                                                                                 small_diffmean):
    """On the hf backend HF generate uses the KV cache; the rule must edit the same absolute positions."""
    method = small_diffmean
    rule = PositionRule.parse("final+3")
    treatment = method.treatment(gemma_fast, "es", "en", layer=6, strength=1.5, rule=rule)
    prompt = QA_TEMPLATE.format(prompt=corpus.prompts(split="eval", n=1)[0].prompt)
    hooks = hooks_for(gemma_fast, treatment.interventions)
    steered = generate(gemma_fast, [prompt], hooks=hooks, max_new_tokens=6)[0]
    assert steered != generate(gemma_fast, [prompt], max_new_tokens=6)[0]
    tokens = gemma_fast.tokenizer(prompt + steered, return_tensors="pt")["input_ids"]
    n_prompt = len(gemma_fast.tokenizer(prompt)["input_ids"])
    with torch.inference_mode(), prompt_ends(n_prompt - 1), gemma_fast.hooks(fwd_hooks=hooks_for(
            gemma_fast, treatment.interventions)):
        logits = gemma_fast(tokens)
    predicted = logits[0, n_prompt - 1:-1].argmax(-1)
    assert torch.equal(predicted, tokens[0, n_prompt:])


@pytest.mark.model
def test_bench_writes_a_leaderboard_table_and_figures_on_the_eval_split(gemma_fast, small_diffmean, tmp_path):
    config = BenchConfig(methods=("none", "prompt-en", "diffmean"), targets=("es",), n_prompts=4,
                         evaluation=EvaluationConfig(max_new_tokens=10, n_utility_contexts=4),
                         calibration=SMALL_CALIBRATION, sweep_methods=("diffmean",), sweep_layers=(6,),
                         sweep_strengths=(0.5, 1.0))
    result = run_bench(gemma_fast, config, tmp_path, progress=False)
    table = pd.read_csv(tmp_path / "results.csv")
    assert set(table["method"]) == {"none", "prompt-en", "diffmean"} and len(table) == 5
    assert (table[table["method"] == "none"]["lid_success"] == 0).all()
    steered = table[(table["method"] == "diffmean") & (table["selection"] == "trust region on dev")].iloc[0]
    assert steered["lid_success"] >= 0.75 and steered["steering_score_ci_low"] <= steered["steering_score"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]["es"]
    assert {"lid_success_ci", "relevance_ci", "kl_ci"} <= metrics["diffmean"].keys()
    assert "| diffmean |" in (tmp_path / "leaderboard.md").read_text()
    for figure in ("bench_method_language.html", "bench_layer_strength_diffmean_es.html", "frontier.html"):
        assert (tmp_path / figure).is_file()
    frontier = pd.read_csv(tmp_path / "frontier.csv")
    assert set(frontier["method"]) == {"diffmean"} and len(frontier) == 3 and frontier["chosen"].sum() == 1
    assert (frontier["bound_kl"] >= 2.0).all() and {"lid_success", "default_rate", "kl"} <= set(frontier.columns)
    prompt_run = next((tmp_path / "runs").glob("prompt-en-es-*.json"))
    record = json.loads(prompt_run.read_text())["records"][0]
    assert record["model_prompt"].endswith("Answer in Spanish.\nA:")
    again = run_bench(gemma_fast, config, tmp_path, progress=False)          # re-run: loaded, not recomputed
    assert again.table["steering_score"].tolist() == result.table["steering_score"].tolist()
