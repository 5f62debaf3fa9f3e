import pytest
import torch

from workbench.interventions import InterventionError, add_vector
from workbench.steering import SteeringError, generate


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
def test_generation_is_the_same_on_the_fast_and_bridge_backends(gemma_fast, gemma_bridge):
    prompts = ["Q: What is an Array?\nA:", "English: Good morning, how are you?\nHindi:"]
    assert generate(gemma_fast, prompts, max_new_tokens=8) == generate(gemma_bridge, prompts, max_new_tokens=8)
