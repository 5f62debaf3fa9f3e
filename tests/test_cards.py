"""Feature cards on the real model: the numbers shown are the analysis functions' numbers, and bad requests fail
with one clear error."""

from __future__ import annotations

import pytest
import torch

from workbench.features.ablation import AblationConfig, ablation_study, language_batches
from workbench.features.cards import CardConfig, feature_card, feature_card_html
from workbench.features.encode import firing_rates
from workbench.features.scores import FeatureError
from workbench.saes.cache import residual_saes
from workbench.saes.config import SAEError, SAETrainConfig

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
        assert len(card.activations[lang]) == round(float(rate) * sum(int(b.attention_mask[:, 1:].sum())
                                                                      for b in batches[lang]))
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
