"""Feature cards on the real model: the numbers shown are the analysis functions' numbers, and bad requests fail
with one clear error."""

from __future__ import annotations

import pytest
import torch

from workbench.features.ablation import AblationConfig, ablation_study, language_batches
from workbench.features.cards import feature_card, feature_card_html
from workbench.features.encode import firing_rates
from workbench.features.scores import FeatureError
from workbench.saes.cache import residual_saes
from workbench.saes.config import SAEError, SAETrainConfig
from workbench.saes.data import capture
from workbench.views import statistics
from workbench.views.contexts import CardConfig

SAE = SAETrainConfig(d_sae=1024, k=32, n_tokens=40_000, training_samples=120_000)
"""The demo's half-size SAE at layer 6 (shared with the SAE-method tests: trained once per cache)."""
HOOK = "blocks.6.hook_resid_post"
CONFIG = CardConfig(languages=("en", "hi", "es"), tokens_per_language=600, ablation_tokens=200)


@pytest.fixture(scope="module")
def sae(gemma_fast):
    return residual_saes(gemma_fast, [6], SAE, progress=False)["blocks.6.hook_resid_post"]


@pytest.fixture(scope="module")
def hindi_latent(gemma_fast, sae):
    """The latent that fires most more often on Hindi than on English text."""
    batches = language_batches(gemma_fast.tokenizer, AblationConfig(languages=("en", "hi"), split="dev",
                                                                    tokens_per_language=400))
    rates = {lang: firing_rates(gemma_fast, {HOOK: sae}, batches[lang], progress=False)[HOOK] for lang in batches}
    return int((rates["hi"] - rates["en"]).argmax())


@pytest.mark.model
def test_a_feature_card_shows_what_the_analysis_functions_measure(gemma_fast, sae, hindi_latent):
    card = feature_card(gemma_fast, sae, hindi_latent, CONFIG)
    assert card.firing_rate["hi"] > card.firing_rate["en"] + 0.05, card.firing_rate
    batches = language_batches(gemma_fast.tokenizer, AblationConfig(languages=CONFIG.languages, split=CONFIG.split,
                                                                    tokens_per_language=CONFIG.tokens_per_language))
    for lang in CONFIG.languages:
        rate = firing_rates(gemma_fast, {HOOK: sae}, batches[lang], progress=False)[HOOK][hindi_latent]
        assert card.firing_rate[lang] == pytest.approx(float(rate), abs=1e-6)
        fired = round(float(rate) * sum(int(b.attention_mask[:, 1:].sum()) for b in batches[lang]))
        assert len(card.activations[lang]) == min(fired, CONFIG.reservoir_size)  # a uniform sample, bounded
    hindi = torch.cat([sae.encode(captured.activations[HOOK])[..., hindi_latent][captured.mask]
                       for captured in capture(gemma_fast, batches["hi"], [HOOK], progress=False)])
    assert card.contexts["hi"][0].peak == pytest.approx(float(hindi.max()), rel=1e-4)  # the top text is the top
    assert float(hindi[hindi > 0].min()) - 1e-4 <= min(card.activations["hi"]) <= max(card.activations["hi"]) <= (
        float(hindi.max()) + 1e-4)
    study = ablation_study(gemma_fast, sae, [hindi_latent], AblationConfig(
        languages=CONFIG.languages, split=CONFIG.split, tokens_per_language=CONFIG.ablation_tokens), progress=False)
    assert card.ablation_delta_ce == pytest.approx(dict(zip(study.languages, study.delta_ce[0].tolist(),
                                                            strict=True)))
    top = card.contexts["hi"][0]
    assert top.peak == max(top.values) > 0 and len(top.tokens) == len(top.values)
    assert [c.peak for c in card.contexts["hi"]] == sorted((c.peak for c in card.contexts["hi"]), reverse=True)
    effect = (sae.W_dec[hindi_latent].detach() @ gemma_fast.hf_model.lm_head.weight.T.detach())
    assert card.promoted[0][1] == pytest.approx(float(effect.max()), rel=1e-4)
    assert card.suppressed[0][1] == pytest.approx(float(effect.min()), rel=1e-4)
    page = feature_card_html(card)
    assert page.count('class="fires"') == sum(sum(v > 0 for v in c.values) for cs in card.contexts.values()
                                              for c in cs)
    assert f"latent {hindi_latent}" in page and "plotly" in page


@pytest.mark.model
def test_every_later_card_of_a_site_reads_the_cached_statistics_not_the_corpus(gemma_fast, sae, hindi_latent,
                                                                              monkeypatch):
    feature_card(gemma_fast, sae, hindi_latent, CONFIG)          # the site's statistics and clean CE are cached

    def no_second_pass(*args, **kwargs):
        raise AssertionError("a later card re-read the held-out corpus")

    monkeypatch.setattr(statistics, "read_statistics", no_second_pass)
    monkeypatch.setattr(statistics, "token_cross_entropy", no_second_pass)
    other = feature_card(gemma_fast, sae, (hindi_latent + 1) % 1024, CONFIG)
    assert set(other.firing_rate) == set(CONFIG.languages) and other.ablation_delta_ce is not None


@pytest.mark.model
def test_a_card_for_a_latent_out_of_range_or_an_sae_of_another_site_is_one_clear_error(gemma_fast, sae):
    with pytest.raises(FeatureError, match=r"latent 1024 is out of range: .* has 1024 latents \(0..1023\)"):
        feature_card(gemma_fast, sae, 1024, CONFIG)
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    other = StandardSAE(StandardSAEConfig(d_in=2048, d_sae=8, metadata=SAEMetadata(
        hook_name="blocks.6.hook_resid_post")))
    with pytest.raises(SAEError, match="input width d_in=2048"):
        feature_card(gemma_fast, other, 0, CONFIG)
    assert torch.isfinite(sae.W_dec).all()



@pytest.mark.model
def test_a_neuron_card_shows_what_the_harvest_and_the_zeroing_measure(gemma_fast):
    from workbench.activations import harvest
    from workbench.neurons.cards import neuron_card, neuron_card_html
    from workbench.neurons.masks import NeuronError, NeuronMask

    config = CardConfig(languages=("en", "hi"), tokens_per_language=500, ablation_tokens=200)
    batches = language_batches(gemma_fast.tokenizer, AblationConfig(languages=config.languages, split=config.split,
                                                                    tokens_per_language=config.tokens_per_language))
    hook = "blocks.17.mlp.hook_pre"
    stats = {lang: harvest(gemma_fast, batches[lang], [hook], progress=False) for lang in config.languages}
    gap = stats["hi"].frac_positive(hook, "hi") - stats["en"].frac_positive(hook, "en")
    neuron = int(gap.argmax())
    mask = torch.zeros(18, gemma_fast.cfg.d_mlp, 2, dtype=torch.bool)
    mask[17, neuron, 1] = True
    card = neuron_card(gemma_fast, 17, neuron, config,
                       masks={"lape": NeuronMask(mask=mask, languages=("en", "hi"), method="lape", config={})})
    for lang in config.languages:  # the cached statistics count what the harvest counts
        assert card.activation_probability[lang] == pytest.approx(float(stats[lang].frac_positive(hook, lang)[neuron]),
                                                                  abs=1e-6)
    assert card.activation_probability["hi"] > card.activation_probability["en"] + 0.2
    assert card.probability_source == "card pass" and card.membership == {"lape": ["hi"]}
    hf = gemma_fast.hf_model
    block = hf.model.layers[17]
    direction = block.mlp.down_proj.weight[:, neuron].detach() * (1 + block.post_feedforward_layernorm.weight.detach())
    effect = hf.lm_head.weight.detach() @ direction
    assert card.promoted[0][1] == pytest.approx(float(effect.max()), rel=1e-4)
    from workbench.saes.quality import token_cross_entropy

    zeroing = AblationConfig(languages=config.languages, split=config.split, tokens_per_language=200)
    held_out = language_batches(gemma_fast.tokenizer, zeroing)

    def zero_after_bos(activation, hook):
        activation[:, 1:, neuron] = 0
        return activation

    for lang in config.languages:
        clean = token_cross_entropy(gemma_fast, held_out[lang])
        zeroed = token_cross_entropy(gemma_fast, held_out[lang],
                                     extra_hooks=[("blocks.17.mlp.hook_post", zero_after_bos)])
        assert card.nll_delta[lang] == pytest.approx(zeroed - clean, abs=1e-5)
    page = neuron_card_html(card)
    assert f"neuron {neuron} of layer 17" in page and page.count('class="fires"') > 0
    with pytest.raises(NeuronError, match=r"neuron 2048 is out of range: layer 17 has 2048 neurons"):
        neuron_card(gemma_fast, 17, 2048, config)
    with pytest.raises(NeuronError, match=r"layer 18 is out of range"):
        neuron_card(gemma_fast, 18, 0, config)
