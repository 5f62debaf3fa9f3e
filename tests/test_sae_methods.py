"""The SAE steering methods: ``sae-diffmean`` (CLaS-Bench's latent mean difference, decoded, error kept) and
``langfir`` (the vector of LangFIR's surviving features)."""

import pytest
import torch
from test_features import random_sae

from workbench import corpus
from workbench.evaluation.mass import language_mass
from workbench.evaluation.token_sets import token_sets_for
from workbench.evaluation.utility import final_logits
from workbench.features.langfir import LangFIRSteering
from workbench.features.sae_diffmean import SaeDiffMean, SaeDiffMeanData
from workbench.features.steer import LatentShift
from workbench.interventions import ALL_POSITIONS, hooks_for
from workbench.prompting import QA_TEMPLATE
from workbench.saes.config import SAETrainConfig


def test_latent_shift_keeps_the_error_term_clips_latents_at_zero_and_is_the_identity_at_zero():
    sae = random_sae(8, 32, "blocks.0.hook_resid_post")
    delta = torch.randn(32, generator=torch.Generator().manual_seed(1))
    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(LatentShift(sae, delta, 0.0)(h), h)
    edited = LatentShift(sae, delta, 2.0)(h)
    z = sae.encode(h)
    shifted = (z + 2.0 * delta).clamp_min(0)
    torch.testing.assert_close(edited - h, sae.decode(shifted) - sae.decode(z))   # h kept, not its reconstruction
    assert (shifted >= 0).all() and not torch.allclose(edited, h)
    lowered = LatentShift(sae, -100 * torch.ones(32), 1.0)(h)
    torch.testing.assert_close(lowered, h - (sae.decode(z) - sae.decode(torch.zeros_like(z))))  # latents -> 0


# ------------------------------------------------------------------------------------------ on the real model

SAE = SAETrainConfig(d_sae=1024, k=32, n_tokens=40_000, training_samples=120_000)
"""The demo's half-size SAEs (trained once per cache, at layer 6 only)."""


def _mass(model, prompts, sets, treatment=None):
    hooks = hooks_for(model, treatment.interventions) if treatment else []
    return language_mass(final_logits(model, prompts, hooks=hooks), sets.masks).mean(0)


@pytest.fixture(scope="module")
def dev_prompts():
    return [QA_TEMPLATE.format(prompt=p.prompt) for p in corpus.prompts(split="dev", n=8)]


@pytest.mark.model
def test_sae_diffmean_moves_the_next_token_mass_to_the_target_and_is_cached(gemma_fast, dev_prompts, monkeypatch):
    sets = token_sets_for(gemma_fast.tokenizer, ["en", "es", "hi"])
    method = SaeDiffMean(sae=SAE, layers=(6,), data=SaeDiffMeanData(n_pairs=128))
    base = _mass(gemma_fast, dev_prompts, sets)
    for target, column in (("es", 1), ("hi", 2)):
        treatment = method.treatment(gemma_fast, target, "en", layer=6, strength=4.0, rule=ALL_POSITIONS)
        steered = _mass(gemma_fast, dev_prompts, sets, treatment)
        assert steered[column] > base[column] + 0.1 and steered[0] < base[0] - 0.1, (target, base, steered)
        assert treatment.provenance["raised"] > 0 and treatment.provenance["lowered"] > 0
    monkeypatch.setattr("workbench.features.sae_diffmean.encode_texts", None)   # a refit would fail
    again = SaeDiffMean(sae=SAE, layers=(6,), data=SaeDiffMeanData(n_pairs=128))
    assert again.treatment(gemma_fast, "es", "en", layer=6, strength=4.0, rule=ALL_POSITIONS).description == \
        method.treatment(gemma_fast, "es", "en", layer=6, strength=4.0, rule=ALL_POSITIONS).description


@pytest.mark.model
def test_langfir_steers_with_its_few_surviving_features(gemma_fast, dev_prompts):
    sets = token_sets_for(gemma_fast.tokenizer, ["en", "hi"])
    method = LangFIRSteering(sae=SAE, layers=(6,))
    treatment = method.treatment(gemma_fast, "hi", "en", layer=6, strength=32.0, rule=ALL_POSITIONS)
    record = treatment.provenance
    assert 1 <= len(record["survivors"]) <= 20, record                # sparse, as LangFIR reports
    assert min(record["target_rate"]) >= 0.1 and max(record["random_rate"]) < 0.02
    base, steered = _mass(gemma_fast, dev_prompts, sets), _mass(gemma_fast, dev_prompts, sets, treatment)
    assert steered[1] > base[1] + 0.05, (base, steered)
