import pytest
import torch

from workbench.generation import SteeringError, generate
from workbench.interventions import InterventionError, add_vector


def test_strength_zero_is_exactly_the_identity(tiny_model):
    tokens = torch.tensor([[1, 5, 9, 12, 3]])
    vector = torch.randn(16)
    plain = tiny_model(tokens)
    site = "blocks.0.hook_resid_post"
    zero = tiny_model.run_with_hooks(tokens, fwd_hooks=[add_vector(tiny_model, site, vector, 0.0)])
    assert torch.equal(plain, zero)
    moved = tiny_model.run_with_hooks(tokens, fwd_hooks=[add_vector(tiny_model, site, vector, 1.0)])
    assert not torch.allclose(plain, moved)


def test_vector_width_is_checked(tiny_model):
    with pytest.raises(InterventionError, match=r"width 16 but blocks.0.mlp.hook_post has width 32"):
        add_vector(tiny_model, "blocks.0.mlp.hook_post", torch.zeros(16))


def test_generate_needs_prompts(tiny_model):
    with pytest.raises(SteeringError, match="no prompts"):
        generate(tiny_model, [])


@pytest.mark.model
def test_every_backend_generates_what_plain_hf_generates(gemma_hf, gemma_fast, gemma_bridge, gemma_hooked):
    """Greedy, KV-cached, left-padded batches: a library release that breaks any backend's cache fails here."""
    hf_model, tokenizer = gemma_hf
    prompts = ["Q: What is an Array?\nA:", "English: Good morning, how are you?\nHindi:", "Q: ¿Qué es un gato?\nA:"]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.inference_mode():
        tokens = hf_model.generate(**encoded, max_new_tokens=8, do_sample=False, top_p=None, top_k=None)
    reference = tokenizer.batch_decode(tokens[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(set(reference[0].split())) > 3, reference  # the reference itself is not degenerate
    for model in (gemma_fast, gemma_bridge, gemma_hooked):
        assert generate(model, prompts, max_new_tokens=8) == reference, model.workbench_metadata.backend
