"""FOXP2 stage III pieces without the real model: the signed shift's algebra, the controls' plans, the trust region,
the shifted window, the gate probe and the report figures."""

import pandas as pd
import pytest
import torch
from test_features import random_sae

from workbench.calibration import CalibrationConfig, bounds, choose_strength, within
from workbench.errors import WorkbenchError
from workbench.features.steer import LatentEdit
from workbench.foxp2.config import Foxp2Config
from workbench.foxp2.gate import GateProbe, instructed_prompts
from workbench.foxp2.matching import MatchingError, rescale_to, search_to
from workbench.foxp2.method import Foxp2Error, Foxp2MethodConfig, shifted_window
from workbench.foxp2.report import trust_region_figure
from workbench.foxp2.shift import (
    LayerShift,
    ShiftError,
    ShiftPlan,
    SignedShift,
    negative_only,
    positive_only,
    random_support,
    rate_matched_latents,
    vector_plan,
)
from workbench.foxp2.trust import TrustRegionConfig, window_objective
from workbench.foxp2.window import WindowSearchConfig, candidate_windows
from workbench.interventions import PositionRule

D = 8


@pytest.fixture
def sae():
    return random_sae(D, 24, "blocks.0.hook_resid_post", seed=3, topk=6)


def test_strength_zero_is_the_identity_and_positive_only_adds_the_target(sae):
    h = torch.randn(3, 5, D)
    target = torch.randn(D)
    assert torch.equal(SignedShift(target, sae, torch.tensor([1, 2]), strength=0.0)(h), h)
    assert torch.allclose(SignedShift(target, strength=2.5)(h), h + 2.5 * target)


def test_the_negative_term_removes_exactly_what_the_features_write(sae):
    h = torch.randn(4, D)
    latents = sae.encode(h)
    feature = int(latents.abs().sum(0).argmax())  # a feature that fires on these rows
    removed = SignedShift(torch.zeros(D), sae, torch.tensor([feature]), beta=1.0, strength=1.0)(h)
    ablated = LatentEdit(sae, feature, 0.0)(h)
    assert torch.allclose(removed, ablated, atol=1e-5)
    assert not torch.allclose(removed, h)
    # beta scales the suppression linearly; the target term adds on top
    half = SignedShift(torch.ones(D), sae, torch.tensor([feature]), beta=0.5, strength=2.0)(h)
    assert torch.allclose(half, h + 2.0 * (torch.ones(D) - 0.5 * (h - ablated)), atol=1e-5)


def test_width_mismatch_fails_early(sae):
    with pytest.raises(ShiftError, match="width"):
        SignedShift(torch.zeros(D + 1), sae, torch.tensor([0]))


def _plan(sae) -> ShiftPlan:
    generator = torch.Generator().manual_seed(0)
    return ShiftPlan("foxp2", (LayerShift(0, "blocks.0.hook_resid_post", torch.randn(D, generator=generator), sae,
                                          (1, 4, 7)),
                               LayerShift(1, "blocks.1.hook_resid_post", torch.randn(D, generator=generator), sae,
                                          (2,))))


def test_controls_keep_sizes_and_change_only_their_part(sae):
    plan = _plan(sae)
    assert positive_only(plan).beta == 0 and positive_only(plan).layers == plan.layers
    assert all(torch.equal(p.target, torch.zeros(D)) for p in negative_only(plan).layers)
    assert [p.features for p in negative_only(plan).layers] == [p.features for p in plan.layers]
    rnd = random_support(plan, seed=1)
    for real, control in zip(plan.layers, rnd.layers, strict=True):
        assert len(control.features) == len(real.features) and not set(control.features) & set(real.features)
        assert control.target.norm() == pytest.approx(float(real.target.norm()), rel=1e-5)
        assert abs(float(torch.nn.functional.cosine_similarity(control.target, real.target, dim=0))) < 0.99
    assert random_support(plan, seed=1).layers[0].features == rnd.layers[0].features
    assert plan.n_features == 4 and len(plan.interventions(1.0, PositionRule.parse("final+8"))) == 2
    with pytest.raises(ShiftError, match="no layers"):
        ShiftPlan("empty", ())
    vectors = vector_plan("diffmean-window", {3: torch.ones(D), 2: torch.zeros(D)}, "blocks.{}.x".format, "")
    assert [p.layer for p in vectors.layers] == [2, 3] and vectors.beta == 0


def test_random_support_latents_fire_as_often_as_the_english_features(sae):
    rates = torch.logspace(-5, 0, 24)  # latent j fires at 10^(-5 + 5j/23)
    features = (20, 21, 3)
    drawn = rate_matched_latents(rates, features, torch.Generator().manual_seed(0), n_nearest=4)
    assert len(set(drawn)) == 3 and not set(drawn) & set(features)
    ratios = (torch.log10(rates[list(drawn)]) - torch.log10(rates[list(features)])).abs()
    assert (ratios < 1.0).all(), ratios  # within the 4 nearest rates (steps of ~0.22 decades)
    target = torch.randn(D)
    plan = ShiftPlan("foxp2", (LayerShift(0, "blocks.0.hook_resid_post", target, sae, features),))
    control = random_support(plan, seed=2, firing_rates={"blocks.0.hook_resid_post": rates})
    assert "matched on English firing rate" in control.description
    gaps = (torch.log10(rates[list(control.layers[0].features)]) - torch.log10(rates[list(features)])).abs()
    assert gaps.max() < 2.0, gaps  # the default 8 nearest, with 2 of them taken: at most 9 steps of ~0.22 decades


def test_trust_region_takes_the_largest_strength_within_bounds_raised_to_prompting():
    trust = Foxp2Config(trust=TrustRegionConfig(strengths=(0.5, 1.0, 2.0))).trust_calibration()
    assert trust.strategy == "trust-region" and trust.strengths == (0.5, 1.0, 2.0)
    assert trust.bounds_from == "prompt-native" == CalibrationConfig().bounds_from   # every method's rule
    limits = bounds(trust.fixed_bounds(), {"leakage_max": 0.01, "kl": 0.2, "nll_delta": 0.0})
    assert limits == {"leakage_max": 0.08, "kl": 0.2, "nll_delta": 0.03}
    assert bounds(trust.fixed_bounds()) == {"leakage_max": 0.08, "kl": 0.08, "nll_delta": 0.03}
    rows = [{"strength": s, "leakage_max": 0.0, "kl": kl, "nll_delta": 0.0} for s, kl in ((0.5, 0.1), (1.0, 0.19),
                                                                                          (2.0, 0.5))]
    chosen, inside = choose_strength(rows, limits)
    assert chosen["strength"] == 1.0 and inside and within(rows[0], limits) and not within(rows[2], limits)
    chosen, inside = choose_strength(rows[2:], limits)
    assert chosen["strength"] == 2.0 and not inside
    # nothing within the bounds: the least damaging setting, which need not be the smallest strength (LAPE's dev
    # sweep into Hindi: x0.25 cost NLL +3.00, x1 +0.11)
    lape_like = [{"strength": s, "leakage_max": 0.0, "kl": kl, "nll_delta": nll}
                 for s, kl, nll in ((0.25, 2.90, 3.00), (0.5, 1.02, 0.81), (1.0, 0.71, 0.11), (2.0, 1.75, 0.63))]
    chosen, inside = choose_strength(lape_like, limits)
    assert chosen["strength"] == 1.0 and not inside
    with pytest.raises(WorkbenchError):
        choose_strength([], limits)
    with pytest.raises(WorkbenchError, match="positive"):
        TrustRegionConfig(strengths=(0.0, 1.0))


def test_shifted_window_goes_after_then_before_then_takes_the_roomier_side():
    assert shifted_window((0, 2), 18) == (3, 5)
    assert shifted_window((14, 17), 18) == (10, 13)
    assert shifted_window((0, 10), 18) == (11, 17)  # the demo's Spanish window: 7 layers after it, none before
    assert shifted_window((2, 12), 18) == (13, 17)
    assert shifted_window((6, 17), 18) == (0, 5)
    with pytest.raises(Foxp2Error, match="no room"):
        shifted_window((0, 17), 18)


def test_config_rejects_unknown_controls_and_rules():
    with pytest.raises(Foxp2Error, match="unknown control"):
        Foxp2Config(controls=("positive-only", "nonsense"))
    with pytest.raises(WorkbenchError, match="position rule"):
        Foxp2Config(rule="middle")


def test_gate_probe_thresholds_the_standardised_logit():
    probe = GateProbe(torch.tensor([1.0, -1.0]), 0.0, torch.zeros(2), torch.ones(2))
    pooled = torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    assert probe.names_language(pooled).tolist() == [True, False, True]  # p = 0.5 is at the threshold
    prompts = instructed_prompts(["Q: hi\nA:"], ["es", "hi"])
    assert len(prompts) == 4 and all(p.startswith("Q: hi") for p in prompts)
    assert any("Spanish" in p for p in prompts)


def test_trust_region_figure_marks_the_bounds_and_the_choice():
    sweep = [{"strength": s, "lid_success": s / 2, "relevance": 1 - s / 2, "steering_score": 0.3,
              "leakage_max": 0.01, "kl": s / 10, "nll_delta": 0.0} for s in (0.5, 1.0)]
    figure = trust_region_figure(sweep, {"leakage_max": 0.08, "kl": 0.08, "nll_delta": 0.03}, 0.5, "hi")
    assert len(figure.data) == 9 and {t.name for t in figure.data} >= {"LID", "KL", "KL bound (0.08)"}
    assert sum(s.type == "line" for s in figure.layout.shapes) == 2  # the chosen strength in both panels
    assert "λ" in figure.layout.xaxis.title.text and pd.DataFrame(sweep).shape == (2, 7)


def test_rows_equal_to_an_outside_activation_are_left_unedited(sae):
    bos = torch.randn(1, D) * 50
    h = torch.cat([bos, torch.randn(3, D)]).unsqueeze(0)  # (batch 1, pos 4, d): BOS first
    shift = SignedShift(torch.ones(D), sae, torch.tensor([0, 5]), strength=1.0, outside=bos)
    edited = shift(h)
    assert torch.equal(edited[0, 0], h[0, 0])
    assert torch.allclose(edited[0, 1:], SignedShift(torch.ones(D), sae, torch.tensor([0, 5]))(h[0, 1:]))
    assert shift.is_outside(h).tolist() == [[True, False, False, False]]


def test_window_objective_is_the_revisions_j():
    unsteered = {"delta_mass": -0.5, "default_rate": 0.0}
    bounds = {"leakage_max": 0.08, "kl": 0.1, "nll_delta": 0.03}
    inside = {"delta_mass": 0.3, "default_rate": 0.6, "leakage_max": 0.01, "kl": 0.05, "nll_delta": 0.0}
    assert window_objective(inside, unsteered, bounds, instability=0.2) == pytest.approx(0.5 * (0.8 + 0.6) - 0.01)
    outside = {**inside, "leakage_max": 0.18, "kl": 0.5, "nll_delta": 0.13}
    assert window_objective(outside, unsteered, bounds, instability=0.2) == pytest.approx(
        0.5 * 1.4 - 2 * 0.1 - 0.4 - 2 * 0.1 - 0.01)
    assert window_objective(outside, unsteered, {}, instability=0.0) == pytest.approx(0.7)


def test_a_climb_stops_at_the_first_strength_outside_the_bounds_and_keeps_the_strongest_inside():
    from workbench.foxp2.trust import climb_to_bounds

    unsteered = {"delta_mass": -0.5, "default_rate": 0.0}
    tried = []

    def evaluate(strength: float) -> dict[str, float]:
        tried.append(strength)
        return {"lid_success": 0.0, "default_rate": min(1.0, strength), "delta_mass": strength - 0.5,
                "leakage_max": 0.0, "kl": 0.1 * strength ** 2, "nll_delta": 0.0, "relevance": 1.0,
                "steering_score": 0.0}
    rows, point = climb_to_bounds(evaluate, [4.0, 0.5, 1.0, 2.0, 8.0], unsteered, {"kl": 0.2})
    assert tried == [0.5, 1.0, 2.0] and [row["within_bounds"] for row in rows] == [True, True, False]
    assert point is rows[1] and point["point"] and not rows[2]["point"]
    assert point["objective"] == pytest.approx(0.5 * (1.0 + 1.0))
    assert rows[2]["objective"] == pytest.approx(0.5 * (2.0 + 1.0) - (0.4 - 0.2))  # the KL excess charged
    rows, point = climb_to_bounds(evaluate, [8.0, 4.0], unsteered, {"kl": 0.2})
    assert point is None and len(rows) == 1 and rows[0]["strength"] == 4.0 and not rows[0]["point"]


def test_window_candidates_are_stage_two_windows_then_a_coarse_grid():
    stage = {"fisher": (14, 17), "mass-excess": (6, 8), "mass-x-stability": (0, 2)}
    candidates = candidate_windows(stage, 18, WindowSearchConfig(widths=(3, 5), stride=3))
    assert list(candidates.items())[:3] == [((14, 17), "fisher"), ((6, 8), "mass-excess"), ((0, 2), "mass-x-stability")]
    grid = [window for window, origin in candidates.items() if origin == "grid"]
    assert grid == [(3, 5), (9, 11), (12, 14), (15, 17), (0, 4), (3, 7), (6, 10), (9, 13), (12, 16)]
    assert candidates[(0, 2)] == "mass-x-stability" and all(last < 18 for _, last in candidates)
    assert list(candidate_windows(stage, 18, WindowSearchConfig(grid=False))) == list(stage.values())


def test_residual_norm_units_spread_the_strength_over_the_window(sae):
    vectors = {layer: torch.ones(D) * (layer + 1) for layer in range(3)}
    plan = vector_plan("v", vectors, lambda layer: f"blocks.{layer}.hook_resid_post", "test", scale=1 / 3)
    steers = plan.interventions(1.5, PositionRule.parse("all"))
    h = torch.zeros(2, D)
    assert [float(s.edit(h)[0, 0]) for s in steers] == pytest.approx([0.5, 1.0, 1.5])
    with pytest.raises(Foxp2Error, match="units"):
        Foxp2MethodConfig(units="percent")


def test_matching_rescales_a_linear_edit_and_bisects_a_monotone_cost():
    calls = []

    def norm(strength: float) -> float:
        calls.append(strength)
        return 3.0 * strength * (1 + 0.01 * strength)  # linear up to a small non-linearity
    strength, value, steps = rescale_to(norm, 6.0, 0.5)
    assert value == pytest.approx(6.0, rel=1e-3) and steps == len(calls) == 3
    kl = lambda s: 0.02 * s ** 2  # noqa: E731 - a convex, increasing cost
    strength, value, steps = search_to(kl, 0.5, 0.1, tolerance=0.05)
    assert abs(value - 0.5) <= 0.025 and strength == pytest.approx(5.0, rel=0.05) and steps <= 10
    strength, value, steps = search_to(kl, 0.5, 100.0, tolerance=0.05, max_steps=3)  # budget spent: the closest
    assert steps == 3 and strength == 25.0
    with pytest.raises(MatchingError, match="nothing to rescale"):
        rescale_to(lambda s: 0.0, 1.0, 1.0)
    with pytest.raises(Foxp2Error, match="unknown matching"):
        Foxp2Config(matchings=("norm",))


def test_dev_choices_fix_the_window_and_beta_so_they_are_not_searched_again():
    from workbench.foxp2.method import Foxp2Method

    method = Foxp2Method(progress=False)
    assert method.config.beta_search is not None and method.with_choices({}) is method
    chosen = method.with_choices({"window": [2, 4], "beta": 0.5, "window_search": [], "beta_search": []})
    assert chosen.config.window == (2, 4) and chosen.config.beta == 0.5 and chosen.config.beta_search is None
    assert chosen.variant_of("positive-only").config.beta == 0.5  # the controls inherit the choices
    with pytest.raises(WorkbenchError, match="beta candidates"):
        from workbench.foxp2.beta import BetaSearchConfig

        BetaSearchConfig(betas=(-1.0,))


def test_stage_one_saes_train_on_a_million_discovery_tokens_with_qa_contexts():
    from transformers import AutoTokenizer

    from workbench.embedded import ensure_embedded_checkpoint
    from workbench.foxp2.sae_features import STAGE_I_SAES, LocaliseConfig
    from workbench.saes.data import buffer_gib, corpus_batches

    config = LocaliseConfig().sae
    assert config == STAGE_I_SAES and config.width(640) == 2560
    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_checkpoint())
    batches, counts = corpus_batches(tokenizer, config.languages, config.split, config.n_tokens,
                                     max_length=config.max_length, qa_share=config.qa_share)
    assert sum(counts.values()) >= 1_000_000 and config.training_samples >= 1_000_000, counts
    assert counts["hi"] < counts["es"] and counts["ar"] < counts["es"]  # the short languages gave all they have
    first_rows = [tokenizer.decode(batch.tokens[0], skip_special_tokens=True) for batch in batches]
    assert any(text.startswith("Q: ") for text in first_rows)
    assert buffer_gib(sum(counts.values()), [640] * 8) > config.max_buffer_gib  # an 8-layer window spills to disk


def test_variants_that_skip_stage_one_keep_their_runs_when_the_saes_or_beta_change_and_a_fixed_window_its_search():
    from dataclasses import replace

    from workbench.foxp2.method import Foxp2Method
    from workbench.foxp2.sae_features import LocaliseConfig
    from workbench.methods import fingerprint_digest
    from workbench.saes import SAETrainConfig

    method = Foxp2Method()
    other = replace(method, config=replace(method.config, beta=0.5, localise=LocaliseConfig(sae=SAETrainConfig())))
    for variant in ("positive-only", "diffmean-window"):
        assert fingerprint_digest(method.variant_of(variant)) == fingerprint_digest(other.variant_of(variant))
    for variant in ("foxp2", "negative-only", "random-support", "shifted-window"):
        assert fingerprint_digest(method.variant_of(variant)) != fingerprint_digest(other.variant_of(variant))
    moved = replace(method, config=replace(method.config, window=(2, 4)))
    probe = "positive-only"
    assert fingerprint_digest(moved.variant_of(probe)) != fingerprint_digest(method.variant_of(probe))
    # once the window is fixed (chosen), how it would have been searched no longer keys the runs
    searched_otherwise = replace(moved, config=replace(moved.config, window_search=WindowSearchConfig(strength=1.0)))
    assert fingerprint_digest(searched_otherwise) == fingerprint_digest(moved)
    assert fingerprint_digest(replace(searched_otherwise, config=replace(searched_otherwise.config, window=None))) \
        != fingerprint_digest(replace(moved, config=replace(moved.config, window=None)))


def test_the_cli_sizes_stage_one_saes_by_a_fixed_width_and_one_epoch_over_the_tokens():
    from workbench.foxp2.cli import _sized_saes
    from workbench.foxp2.sae_features import STAGE_I_SAES
    from workbench.inputs import InputError

    assert _sized_saes(STAGE_I_SAES, None, None) == STAGE_I_SAES
    sized = _sized_saes(STAGE_I_SAES, 1024, 40_000)
    assert sized.width(640) == 1024 and sized.expansion_factor is None
    assert sized.n_tokens == sized.training_samples == 40_000 and sized.qa_share == STAGE_I_SAES.qa_share
    with pytest.raises(InputError, match="--sae-latents must be a positive integer"):
        _sized_saes(STAGE_I_SAES, 0, None)
