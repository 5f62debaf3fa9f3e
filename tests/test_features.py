"""Feature analysis: pure scores on synthetic tensors, feature interventions, tracing on tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_cfg
from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer

from workbench.activations import TokenBatch
from workbench.features import (
    FeatureAblation,
    FeatureError,
    FeatureSteer,
    LatentEdit,
    compact_neuron_set,
    decoder_vector,
    decoder_vectors,
    encoder_directions,
    joint_scores,
    langfir_mask,
    lift_slopes,
    natural_activation,
    selectivity,
    top_positive,
    trace_features,
    traced_layers,
)
from workbench.features.tracing import random_neurons_like, top_neurons
from workbench.interventions import PositionRule, prompt_ends
from workbench.sites import Site


def random_sae(d_in: int, d_sae: int, hook_name: str, *, seed: int = 0, topk: int | None = None):
    """A SAELens SAE with random weights and biases (b_dec and b_enc non-zero, to exercise every term)."""
    metadata = SAEMetadata(hook_name=hook_name, model_name="tiny")
    if topk is None:
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=metadata))
    else:
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=topk, rescale_acts_by_decoder_norm=True,
                                    metadata=metadata))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return sae.eval()


def counting_batches(n_sequences: int = 32, length: int = 16, vocab: int = 64, seed: int = 0) -> list[TokenBatch]:
    generator = torch.Generator().manual_seed(seed)
    tokens = (torch.randint(vocab, (n_sequences, 1), generator=generator) + torch.arange(length)) % vocab
    mask = torch.ones_like(tokens)
    return [TokenBatch(tokens[i:i + 16], mask[i:i + 16], ["x"] * len(tokens[i:i + 16]))
            for i in range(0, n_sequences, 16)]


# ----------------------------------------------------------------------------------------------- pure scores

def test_selectivity_is_the_documented_formula():
    target = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 1.0]])
    english = torch.tensor([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
    sel = selectivity(target, english)
    std_t = target.std(0, unbiased=False)
    expected = (target.mean(0) - english.mean(0)) / (std_t + 0.0 + 1e-6)
    assert torch.allclose(sel, expected)
    assert sel[0] > 0 > sel[1]


def test_planted_feature_is_the_most_selective():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(200, 50, generator=generator)
    english = torch.rand(200, 50, generator=generator)
    target[:, 17] += 2.0
    english[:, 31] += 2.0
    sel = selectivity(target, english)
    assert int(sel.argmax()) == 17 and int(sel.argmin()) == 31
    assert top_positive(sel, 1).tolist() == [17] and top_positive(-sel, 1).tolist() == [31]


def test_lift_slope_is_the_median_of_dm_over_a():
    delta = torch.tensor([[1.0, 4.0, 3.0], [-2.0, -2.0, -2.0]])
    scales = torch.tensor([1.0, 2.0, 4.0])
    # row 0: dM/a = 1, 2, 0.75 -> median 1; row 1: -2, -1, -0.5 -> -1
    assert torch.allclose(lift_slopes(delta, scales), torch.tensor([1.0, -1.0]))
    even = lift_slopes(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.ones(4))
    assert torch.allclose(even, torch.tensor([2.5]))


def test_joint_scores_split_the_sides():
    sel = torch.tensor([2.0, -1.0, 1.0, -3.0])
    slope = torch.tensor([0.5, -0.2, -0.1, float("nan")])
    target, english = joint_scores(sel, slope)
    assert torch.allclose(target, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(english, torch.tensor([0.0, 0.2, 0.0, 0.0]))


def test_natural_activation_and_langfir_mask():
    natural = natural_activation(torch.tensor([6.0, 0.0]), torch.tensor([3.0, 0.0]))
    assert natural[0] == 2.0 and torch.isnan(natural[1])
    target_rate = torch.tensor([0.9, 0.6, 0.05, 0.5])
    random_rate = torch.tensor([0.0, 0.4, 0.0, 0.01])
    mask = langfir_mask(target_rate, random_rate, min_target_rate=0.2, max_random_rate=0.02)
    assert mask.tolist() == [True, False, False, True]


def test_compact_neuron_set_pools_feature_shares():
    contributions = torch.zeros(2, 2, 4)
    contributions[0, 0, 1] = 3.0
    contributions[0, 1, 2] = 1.0
    contributions[0, 1, 3] = -5.0  # negative contributions are not language neurons
    contributions[1, 1, 2] = 2.0
    neurons = compact_neuron_set([(contributions, [4, 7])], per_feature=2, max_neurons=10)
    assert neurons[0] == {"layer": 7, "index": 2, "weight": 1.25, "n_features": 2}
    assert neurons[1] == {"layer": 4, "index": 1, "weight": 0.75, "n_features": 1}
    assert len(neurons) == 2


def test_top_neurons_rank_signed_or_by_magnitude():
    contributions = torch.tensor([[0.5, -3.0, 0.0], [1.0, 0.2, -0.1]])
    assert top_neurons(contributions, [2, 5], 2) == [(5, 0), (2, 0)]
    assert top_neurons(contributions, [2, 5], 2, by_magnitude=True) == [(2, 1), (5, 0)]


def test_decoder_vectors_of_chosen_rows_match_all_rows():
    sae = random_sae(16, 40, "blocks.1.hook_resid_post", topk=5)
    every = decoder_vectors(sae)
    torch.testing.assert_close(decoder_vectors(sae, [7, 3]), every[[7, 3]])
    torch.testing.assert_close(decoder_vector(sae, 11), every[11])
    with pytest.raises(FeatureError, match="0..39"):
        decoder_vectors(sae, [40])


def test_random_neurons_match_layers_and_avoid_the_traced():
    traced = [(0, 1), (0, 2), (3, 5)]
    draw = random_neurons_like(traced, 8, torch.Generator().manual_seed(0))
    assert sorted(layer for layer, _ in draw) == [0, 0, 3] and not set(draw) & set(traced)


# ------------------------------------------------------------------------------------ feature interventions

def test_encoder_directions_reproduce_topk_preactivations():
    sae = random_sae(16, 40, "blocks.1.hook_resid_post", topk=5)
    x = torch.randn(30, 16, generator=torch.Generator().manual_seed(1))
    encoder, bias = encoder_directions(sae)
    latents = sae.encode(x)
    pre = x @ encoder + bias
    active = latents != 0
    assert int(active.sum(-1).max()) == 5
    assert torch.allclose(latents[active], pre[active], atol=1e-5)


def test_latent_ablation_keeps_the_error_term_and_is_identity_when_nothing_changes():
    sae = random_sae(16, 40, "blocks.1.hook_resid_post", topk=5)
    h = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(2))
    latents = sae.encode(h)
    inactive = int((latents == 0).all(0).all(0).nonzero()[0])
    assert torch.equal(LatentEdit(sae, inactive)(h), h)  # nothing to ablate: exactly h
    j = int(latents[0, 0].argmax())
    assert torch.equal(LatentEdit(sae, j, strength=0.0)(h), h)
    edited = LatentEdit(sae, j)(h)
    expected_change = -latents[..., j:j + 1] * decoder_vector(sae, j)
    assert torch.allclose(edited - h, expected_change, atol=1e-5)
    error_before = h - sae.decode(latents)
    changed = latents.clone()
    changed[..., j] = 0
    assert torch.allclose(edited - sae.decode(changed), error_before, atol=1e-5)  # error term kept
    clamped = LatentEdit(sae, j, value=3.0)(h)
    assert torch.allclose(clamped - h, (3.0 - latents[..., j:j + 1]) * decoder_vector(sae, j), atol=1e-5)


def test_feature_hooks_on_a_model_respect_rules_and_identity(tiny_model):
    sae = random_sae(16, 40, "blocks.1.hook_resid_post")
    tokens = torch.randint(64, (2, 6), generator=torch.Generator().manual_seed(3))
    clean = tiny_model(tokens)
    for steer in (FeatureAblation(sae, 3, strength=0.0), FeatureSteer(sae, 3, scale=0.0)):
        with tiny_model.hooks(fwd_hooks=steer.hooks(tiny_model)):
            assert torch.equal(tiny_model(tokens), clean)
    captured = {}

    def keep(activation, hook):
        captured["resid"] = activation.clone()

    _, cache = tiny_model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    steer = FeatureSteer(sae, 3, scale=2.5, rule=PositionRule.parse("final"))
    with prompt_ends(torch.tensor([5, 3])), tiny_model.hooks(
            fwd_hooks=[*steer.hooks(tiny_model), ("blocks.1.hook_resid_post", keep)]):
        tiny_model(tokens)
    change = captured["resid"] - cache["blocks.1.hook_resid_post"]
    edited = change.norm(dim=-1) > 0
    assert edited.tolist() == [[False] * 5 + [True], [False] * 3 + [True, False, False]]
    assert torch.allclose(change[0, 5], 2.5 * sae.W_dec[3], atol=1e-5)


def test_feature_interventions_refuse_bad_input(tiny_model):
    sae = random_sae(16, 40, "blocks.1.hook_resid_post")
    with pytest.raises(FeatureError, match=r"0\.\.39"):
        FeatureSteer(sae, 40)
    with pytest.raises(FeatureError, match="zero, clamp, direction"):
        FeatureAblation(sae, 1, mode="mean")
    with pytest.raises(Exception, match="width 16"):
        FeatureSteer(random_sae(8, 10, "blocks.1.hook_resid_post"), 1).hooks(tiny_model)
    direction = FeatureAblation(sae, 1, mode="direction").edit()
    h = torch.randn(4, 16)
    unit = sae.W_dec[1] / sae.W_dec[1].norm()
    assert torch.allclose(direction(h) @ unit, torch.zeros(4), atol=1e-5)


# ------------------------------------------------------------------------------------------------- tracing

def test_traced_layers_follow_the_site():
    assert traced_layers(Site(3, "resid_post")) == [0, 1, 2, 3]
    assert traced_layers(Site(3, "resid_pre")) == [0, 1, 2]
    assert traced_layers(Site(3, "mlp_out")) == [3]
    with pytest.raises(FeatureError, match="attn_out"):
        traced_layers(Site(3, "attn_out"))


def test_tracing_equals_the_manual_direct_attribution(tiny_model):
    sae = random_sae(16, 24, "blocks.1.hook_resid_post")
    batches = counting_batches()
    features = [0, 5, 9]
    tracing = trace_features(tiny_model, sae, features, batches, weighting="uniform", exclude_bos=False,
                             progress=False)
    tokens = torch.cat([b.tokens for b in batches])
    _, cache = tiny_model.run_with_cache(tokens)
    encoder, _ = encoder_directions(sae)
    for layer in (0, 1):
        post = cache[f"blocks.{layer}.mlp.hook_post"].reshape(-1, 32)
        manual = post.mean(0).unsqueeze(0) * (tiny_model.blocks[layer].mlp.W_out @ encoder[:, features]).T
        assert torch.allclose(tracing.contributions[:, layer], manual, atol=1e-5)
        # the neurons' terms add up to the MLP output's projection (minus the output bias)
        out = cache[f"blocks.{layer}.hook_mlp_out"].reshape(-1, 16) - tiny_model.blocks[layer].mlp.b_out
        assert torch.allclose(tracing.contributions[:, layer].sum(-1), (out @ encoder[:, features]).mean(0),
                              atol=1e-4)


def test_tracing_through_a_post_mlp_rmsnorm_sums_to_the_mlp_output():
    torch.manual_seed(0)
    model = HookedTransformer(make_tiny_cfg(use_normalization_before_and_after=True)).eval()
    with torch.no_grad():
        model.blocks[0].ln2_post.w.copy_(torch.linspace(0.5, 1.5, 16))
        model.blocks[0].mlp.b_out.copy_(torch.zeros(16))
    sae = random_sae(16, 24, "blocks.0.hook_mlp_out")
    batches = counting_batches()
    features = [1, 2]
    tracing = trace_features(model, sae, features, batches, weighting="uniform", exclude_bos=False, progress=False)
    _, cache = model.run_with_cache(torch.cat([b.tokens for b in batches]))
    encoder, _ = encoder_directions(sae)
    out = cache["blocks.0.hook_mlp_out"].reshape(-1, 16)
    assert torch.allclose(tracing.contributions[:, 0].sum(-1), (out @ encoder[:, features]).mean(0), atol=1e-4)


def test_mlp_post_saes_trace_through_their_decoder(tiny_model):
    sae = random_sae(32, 24, "blocks.1.mlp.hook_post")
    tracing = trace_features(tiny_model, sae, [4], counting_batches(), exclude_bos=False, progress=False)
    assert tracing.layers == [1] and tracing.method == "decoder"
    expected = tracing.mean_activation[0] * decoder_vector(sae, 4)
    assert torch.allclose(tracing.contributions[0, 0], expected, atol=1e-6)


# ------------------------------------------------------------------------------------------------- imports

@pytest.mark.parametrize("module", ["workbench.features.analysis", "workbench.saes.cli", "workbench.features.cli"])
def test_module_imports_on_its_own(module):
    """No import cycle; the CLI modules stay light (no torch until a command runs)."""
    import subprocess
    import sys

    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    if module.endswith(".cli"):
        assert result.stdout.strip() == "False"


def test_lift_config_names_the_english_scorings():
    from workbench.features.analysis import LiftConfig

    assert LiftConfig().english == "ablate"
    with pytest.raises(FeatureError, match="ablate, add"):
        LiftConfig(english="remove")
