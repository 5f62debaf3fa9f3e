"""FOXP2 on the real embedded model (small data): stage II's language difference is low-rank, stable and beats
its null models; the whole pipeline shifts the output towards the target, its random control only damages, its
artifacts are written and re-read, and the instruction gate switches the shift off for instructed prompts only."""

import json
import time
from functools import partial

import pandas as pd
import pytest
import torch

import workbench.methods
from workbench.activations import HarvestError
from workbench.bench import BenchConfig, run_bench
from workbench.calibration import SELECTIONS, CalibrationConfig
from workbench.demo import DemoConfig, write_demo_results
from workbench.directions import DirectionDataConfig
from workbench.evaluation import QA_TEMPLATE, EvaluationConfig, final_logits
from workbench.evaluation.results import COLUMNS
from workbench.foxp2.beta import BetaSearchConfig
from workbench.foxp2.config import Foxp2Config
from workbench.foxp2.gate import fit_gate, gated
from workbench.foxp2.matching import MatchConfig
from workbench.foxp2.method import Foxp2Method
from workbench.foxp2.pairs import PairDataConfig, pair_representations, response_sequences
from workbench.foxp2.pipeline import run_foxp2
from workbench.foxp2.sae_features import LocaliseConfig
from workbench.foxp2.shift import LayerShift, ShiftPlan
from workbench.foxp2.spectra import spectral_stage
from workbench.foxp2.trust import TrustRegionConfig
from workbench.foxp2.window import WindowSearchConfig
from workbench.interventions import PositionRule, hooks_for
from workbench.methods import DirectionMethod
from workbench.prompting import with_instruction
from workbench.readouts import activations_at
from workbench.saes.config import SAETrainConfig
from workbench.spectral import SpectralConfig

pytestmark = pytest.mark.model


def test_spectral_stage_on_gemma_beats_the_null_models_and_is_cached(gemma_fast, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    data, config = PairDataConfig(n_pairs=48, max_length=48), SpectralConfig(n_bootstrap=6)
    report = spectral_stage(gemma_fast, "hi", data=data, config=config, progress=False)
    frame = report.frame
    assert len(frame) == gemma_fast.cfg.n_layers and set(report.bases) == set(range(gemma_fast.cfg.n_layers))
    first, last = report.window
    assert 3 <= last - first + 1 <= 12 and report.window == report.windows()["fisher"]
    assert report.config["n_rows"] == 3 * 48   # three response positions per pair
    # the language means separate far beyond labels that carry no information, at every layer; the uncentred
    # difference is low-rank far beyond a random subspace
    assert (frame["fisher"] > 3 * frame["fisher_null"]).all()
    assert (frame["fisher"] > 10 * frame["fisher_null"]).mean() > 0.8
    assert (frame["mass"] > 20 * frame["random_support_mass"]).all()
    assert frame["stability"].median() > 0.8
    again = spectral_stage(gemma_fast, "hi", data=data, config=config, progress=False)
    assert again.window == report.window and again.frame["mass"].tolist() == pytest.approx(frame["mass"].tolist())
    # stage I reads the rows stage II used from the store, without running the model again
    monkeypatch.setattr("workbench.foxp2.pairs.activations_at", _no_forward)
    rows = pair_representations(gemma_fast, "hi", "en", data, progress=False)
    assert rows["hi"].shape == (gemma_fast.cfg.n_layers, 3 * 48, gemma_fast.cfg.d_model)
    torch.testing.assert_close((rows["hi"].double() - rows["en"].double()).mean(1).float(), report.mean_differences)


def _no_forward(*args, **kwargs):
    raise AssertionError("the model ran although the rows are in the store")


def test_response_rows_share_the_prompt_and_differ_from_the_first_answer_token(gemma_fast):
    """Both languages answer one English question: every position before the answer has the same activation, the
    rows read (the first answer positions) do not."""
    questions = ["How do I insert a table?", "Printing a document"]
    answers = {"en": ["Choose Table - Insert Table.", "Choose File - Print."],
               "hi": ["तालिका - तालिका डालें चुनें।", "फ़ाइल - मुद्रण चुनें।"]}
    sequences, starts = response_sequences(gemma_fast, questions, answers, 3, 64)
    assert len(starts) == 2 and all(sequences["en"][i][:s] == sequences["hi"][i][:s] for i, s in enumerate(starts))
    names = ["blocks.3.hook_resid_post"]
    before = {code: activations_at(gemma_fast, sequences[code], [[s - 1] for s in starts], names, progress=False)
              for code in answers}
    read = {code: activations_at(gemma_fast, sequences[code], [list(range(s, s + 3)) for s in starts], names,
                                 progress=False) for code in answers}
    assert torch.allclose(before["en"], before["hi"], atol=1e-3)
    assert read["en"].shape == (1, 6, gemma_fast.cfg.d_model)
    assert (read["en"] - read["hi"]).norm(dim=-1).min() > 1.0
    with pytest.raises(HarvestError, match="outside a sequence"):
        activations_at(gemma_fast, sequences["en"], [[0], [999]], names, progress=False)


# ------------------------------------------------------------------------------------- stages I-III end to end

TINY = dict(
    pairs=PairDataConfig(n_pairs=32, max_length=48), spectral=SpectralConfig(n_bootstrap=4),
    window_search=WindowSearchConfig(grid=False),
    match=MatchConfig(n_prompts=3, n_contexts=3, max_steps=4), beta_search=BetaSearchConfig(betas=(0.0, 1.0)),
    trust=TrustRegionConfig(strengths=(0.1, 2.0), max_kl=50.0, max_leakage=1.0, max_nll_delta=50.0),
    n_dev_prompts=4, dev_evaluation=EvaluationConfig(max_new_tokens=6, n_utility_contexts=3, utility_split="dev"),
    n_prompts=4, evaluation=EvaluationConfig(max_new_tokens=8, n_utility_contexts=3, bootstrap_resamples=100),
    calibration=CalibrationConfig(n_prompts=3, max_new_tokens=6, n_utility_contexts=2, layers=(4,), strengths=(1.0,)))


@pytest.fixture(scope="module")
def foxp2_run(gemma_fast, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_CACHE", str(cache))
        # DiffMean (baseline and same-layer control) fitted on fewer rows: one cheap harvest
        patch.setitem(workbench.methods._REGISTRY, "diffmean",
                      partial(DirectionMethod, "diffmean", "diffmean", data=DirectionDataConfig(n_rows=96,
                                                                                              negatives=("hi",))))
        config = Foxp2Config(localise=LocaliseConfig(
            sae=SAETrainConfig(d_sae=256, k=16, n_tokens=4096, training_samples=8192, batch_size=256),
            n_pairs=24, n_lift_candidates=6, n_target_keep=8, n_english_keep=8), **TINY)
        out = tmp_path_factory.mktemp("foxp2")
        started = time.perf_counter()
        result = run_foxp2(gemma_fast, "hi", out, config, progress=False)
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = run_foxp2(gemma_fast, "hi", out, config, progress=False)
        # the registered methods, built as run_foxp2 builds them (tiny stages), for the spine tests below
        foxp2 = Foxp2Method(config=config.method_config(), progress=False)
        patch.setitem(workbench.methods._REGISTRY, "foxp2", lambda: foxp2)
        patch.setitem(workbench.methods._REGISTRY, "foxp2-random-support",
                      lambda: foxp2.variant_of("random-support"))
        yield result, again, first_seconds, time.perf_counter() - started, config


def test_foxp2_shifts_the_output_towards_the_target_and_the_random_control_only_damages(foxp2_run):
    result, _, _, _, _ = foxp2_run
    assert result.strength == 2.0 and result.within_bounds  # the relaxed bounds admit the larger strength
    first, last = result.window
    # the window is the best J on dev among stage II's windows, each tried with the positive term only at its
    # trust-region point (the relaxed bounds admit both strengths: each climbed to 2.0)
    search = pd.DataFrame(result.window_search)
    assert set(search["origin"]) <= {"fisher", "mass-excess", "mass-x-stability"}
    assert set(search["strength"]) == {0.1, 2.0} and search["within_bounds"].all()
    points = search[search["point"]]
    assert (points["strength"] == 2.0).all() and len(points) == len(search) // 2
    best = points.loc[points["objective"].idxmax()]
    assert (best["first"], best["last"]) == result.window
    assert [p["layer"] for p in result.plans["foxp2"]["layers"]] == list(range(first, last + 1))
    # beta chosen with lambda on dev: each beta's strongest admissible point, the best J among them
    betas = pd.DataFrame(result.beta_search)
    assert set(betas["beta"]) == {0.0, 1.0} and betas["within_bounds"].all()  # the relaxed bounds admit all
    points = betas[betas["point"]]
    assert len(points) == 2 and (points["strength"] == 2.0).all()
    assert result.plans["foxp2"]["beta"] == points.loc[points["objective"].idxmax(), "beta"]
    assert sum(p["n_features"] for p in result.plans["foxp2"]["layers"])
    # stage II in SAE-feature space at the window: the same response rows, encoded; Hindi and English separate
    spectra = result.localisation.feature_spectra
    assert list(spectra["layer"]) == list(range(first, last + 1))
    assert (spectra["fisher"] > 5 * spectra["fisher_null"]).all(), spectra[["layer", "fisher", "fisher_null"]]
    shifted = [p["layer"] for p in result.plans["shifted-window"]["layers"]]
    assert not set(shifted) & set(range(first, last + 1)) and len(shifted) == last - first + 1
    metrics = result.metrics
    # the shift moves early next-token mass from English to Hindi, far beyond the unsteered model
    assert metrics["foxp2"]["delta_mass"] > metrics["none"]["delta_mass"] + 0.5
    sweep = {row["strength"]: row for row in result.sweep}
    assert sweep[2.0]["delta_mass"] > sweep[0.1]["delta_mass"]
    # a random direction of the same norm and random latents break the model; the language direction does not
    assert metrics["random-support"]["nll_delta"] > metrics["foxp2"]["nll_delta"] + 1.0
    controls = {"positive-only", "negative-only", "random-support", "shifted-window", "diffmean-window"}
    matched = {f"{control}@{on}" for control in controls for on in ("edit-norm", "kl")}
    assert set(metrics) == {"foxp2", "foxp2@final+8", *controls, *matched, "none", "prompt-en", "prompt-native",
                            "diffmean"}
    assert result.plans["foxp2@final+8"]["rule"] == "final+8" and result.plans["foxp2"]["rule"] == "all"
    # each control also ran at the strength where its mean edit norm (exactly, up to the negative term's
    # non-linearity) or its dev KL (within 10%, or the closest of the 4 tries) equals FOXP2's
    for row in result.matched:
        assert row["strength"] > 0 and result.plans[f"{row['control']}@{row['matched_on']}"]["strength"] == \
            row["strength"]
        if row["matched_on"] == "edit-norm":
            assert row["value"] == pytest.approx(row["reference"], rel=0.05), row
        else:
            assert abs(row["value"] - row["reference"]) <= 0.1 * row["reference"] or row["steps"] == 4, row
    positive = next(row for row in result.matched if row["control"] == "positive-only" and
                    row["matched_on"] == "edit-norm")
    assert positive["value"] == pytest.approx(positive["reference"], rel=1e-3)  # a linear edit: exact


def test_foxp2_writes_every_artifact_and_a_rerun_loads_them(foxp2_run):
    result, again, first_seconds, second_seconds, _ = foxp2_run
    out = result.out_dir
    for name in ("report.md", "metrics.json", "results.csv", "trust_region.csv", "trust_region.html",
                 "window_search.csv", "window_search.html", "beta_search.csv",
                 "comparison.html", "spectral/spectral.json", "spectral/spectral_profile.html",
                 "features/features.json"):
        assert (out / name).is_file(), name
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["metrics"]["hi"]["foxp2"]["lid_success_ci"] and payload["window"] == list(result.window)
    assert len(pd.read_csv(out / "results.csv")) == len(result.metrics)
    report = (out / "report.md").read_text()
    assert "## Stage III: trust region" in report and "| random-support |" in report
    assert "Candidate windows on dev" in report and payload["window_search"] == result.window_search
    assert "Controls at matched cost" in report and payload["matched_controls"] == result.matched
    assert again.metrics == result.metrics and again.strength == result.strength
    assert second_seconds < first_seconds / 3


def test_foxp2_runs_on_the_benchmark_spine_like_every_method(gemma_fast, foxp2_run, tmp_path):
    """`get_method("foxp2")` calibrated by its trust-region strategy and evaluated by the benchmark: the same dev
    sweep, strength and eval metrics as the stage-by-stage run (each evaluation is the same stored run)."""
    result, _, _, _, config = foxp2_run
    bench = run_bench(gemma_fast, BenchConfig(methods=("foxp2", "foxp2-random-support"), targets=("hi",),
                                              n_prompts=config.n_prompts, evaluation=config.evaluation,
                                              calibration=config.trust_calibration()), tmp_path, progress=False)
    calibration = bench.calibrations["hi"]["foxp2"]
    assert calibration["strategy"] == "trust-region" and calibration["strength"] == result.strength
    assert calibration["sweep"] == result.sweep and calibration["bounds"] == result.bounds
    row = bench.table.set_index("method").loc["foxp2"]
    assert row["lid_success"] == result.metrics["foxp2"]["lid_success"]
    assert row["nll_delta"] == pytest.approx(result.metrics["foxp2"]["nll_delta"])
    # the random control, calibrated by its own trust region, only damages: at FOXP2's strength on dev it costs far
    # more than FOXP2 there, and its own calibrated setting moves no mass towards Hindi
    control_sweep = {r["strength"]: r for r in bench.calibrations["hi"]["foxp2-random-support"]["sweep"]}
    foxp2_sweep = {r["strength"]: r for r in calibration["sweep"]}
    assert control_sweep[result.strength]["nll_delta"] > foxp2_sweep[result.strength]["nll_delta"] + 1.0
    control = bench.leaderboard["hi"]["foxp2-random-support"]
    assert control["delta_mass"] < row["delta_mass"] - 0.5
    # the demo's report is built from both runs' rows, in the same schema
    write_demo_results({"hi": result}, bench, DemoConfig(), tmp_path / "demo")
    table = pd.read_csv(tmp_path / "demo" / "results.csv")
    assert tuple(table.columns) == COLUMNS and {"foxp2", "random-support", "foxp2-random-support"} <= set(table.method)
    assert len(table) == len(result.metrics) + 1   # bench's foxp2 row is FOXP2's own: listed once
    # FOXP2's DiffMean baseline says how it was chosen: by the calibration's own rule (the trust region here)
    selections = table.drop_duplicates("method").set_index("method")["selection"]
    assert selections["diffmean"] == SELECTIONS["trust-region"] == selections["foxp2"]
    assert selections["prompt-native"] == "fixed"
    assert "| foxp2-random-support |" in (tmp_path / "demo" / "demo.md").read_text()


def test_instruction_gate_switches_the_shift_off_only_for_instructed_prompts(gemma_fast, foxp2_run):
    result, _, _, _, _ = foxp2_run
    report = fit_gate(gemma_fast, languages=("hi", "es", "de", "en"), n_prompts=16)
    assert report.accuracy >= 0.9 and report.false_off <= 0.1
    plan = ShiftPlan("foxp2", tuple(LayerShift(p["layer"], p["site"], torch.ones(gemma_fast.cfg.d_model) * 0.5)
                                    for p in result.plans["foxp2"]["layers"]), beta=0.0)
    steers = gated(plan.interventions(1.0, PositionRule.parse("all")), report.probe)
    plain = QA_TEMPLATE.format(prompt="How do I boil an egg?")
    prompts = [plain, with_instruction(plain, "Answer in Hindi.")]
    base = final_logits(gemma_fast, prompts)
    steered = final_logits(gemma_fast, prompts, hooks=hooks_for(gemma_fast, steers))
    assert not torch.allclose(base[0], steered[0], atol=1e-3)
    assert torch.allclose(base[1], steered[1], atol=1e-4)
