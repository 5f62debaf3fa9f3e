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


@pytest.mark.model
def test_steered_greedy_outputs_do_not_depend_on_the_batch_size(gemma_fast):
    """The evaluation batches generation by ``EvaluationConfig.batch_size`` for speed: the answers must not change."""
    from workbench import corpus
    from workbench.prompting import QA_TEMPLATE

    prompts = [QA_TEMPLATE.format(prompt=row.prompt) for row in corpus.prompts(split="dev", n=10)]
    vector = 40 * torch.nn.functional.normalize(torch.randn(gemma_fast.cfg.d_model,
                                                            generator=torch.Generator().manual_seed(0)), dim=0)
    hooks = [add_vector(gemma_fast, "blocks.6.hook_resid_post", vector)]
    one_by_one = generate(gemma_fast, prompts, hooks=hooks, max_new_tokens=12, batch_size=1)
    assert len(set(one_by_one)) > 5, one_by_one
    assert generate(gemma_fast, prompts, hooks=hooks, max_new_tokens=12, batch_size=4) == one_by_one
    assert generate(gemma_fast, prompts, hooks=hooks, max_new_tokens=12, batch_size=10) == one_by_one
