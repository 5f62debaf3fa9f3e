"""Models across devices and dtypes: a device map that splits a model gives the same steered logits as the whole model,
every intervention follows the activation's device and dtype, bf16 steering stays within a stated tolerance of fp32,
and a placement this machine cannot run fails at once with one clear error."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny_gemma3

from workbench.devices import DeviceError, check_device, check_device_map, check_dtype_runs, parse_dtype
from workbench.interventions import (
    AblateDirection,
    AddVector,
    Intervention,
    Project,
    Rescale,
    SetComponent,
    SetUnits,
    hooks_for,
)
from workbench.models import ModelLoadError, load_model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A 2-layer Gemma 3 checkpoint on disk with the embedded model's tokenizer."""
    return save_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3"))


SPLIT_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
             "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}
"""Two placements on a machine without GPUs: block 1's weights live on disk and accelerate brings them in per call
(they sit on the meta device in between), the rest on the CPU."""


def _steering(model):
    vector = torch.linspace(-1, 1, 16)
    return hooks_for(model, [Intervention("blocks.0.hook_resid_post", AddVector(vector, 3.0)),
                             Intervention("blocks.1.mlp.hook_post", SetUnits(torch.tensor([2, 7]),
                                                                             torch.tensor([1.5, -0.5])))])


def test_a_model_split_by_a_device_map_gives_the_whole_models_steered_logits(tiny_checkpoint):
    from workbench.generation import generate

    whole = load_model(tiny_checkpoint, backend="hf")
    split = load_model(tiny_checkpoint, backend="hf", device_map=SPLIT_MAP)
    offloaded = dict(split.hf_model.named_parameters())["model.layers.1.mlp.down_proj.weight"]
    assert offloaded.device.type == "meta"  # really not resident: accelerate's hooks load it per call
    tokens = whole.tokenizer(["Hello world, how are you?", "नमस्ते"], return_tensors="pt", padding=True)
    logits = []
    for model in (whole, split):
        with torch.inference_mode(), model.hooks(fwd_hooks=_steering(model)):
            logits.append(model(tokens["input_ids"], attention_mask=tokens["attention_mask"]))
    with torch.inference_mode():
        unsteered = whole(tokens["input_ids"], attention_mask=tokens["attention_mask"])
    assert (logits[0] - unsteered).abs().max() > 1e-3  # the steering does something
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=1e-6)
    prompts = ["Q: What is a cell?\nA:"]
    assert generate(split, prompts, hooks=_steering(split), max_new_tokens=4) == generate(
        whole, prompts, hooks=_steering(whole), max_new_tokens=4)


def test_the_bridge_takes_a_device_map_and_keeps_the_steered_logits(tiny_checkpoint):
    """The bridge loads the checkpoint itself when given a map (TransformerLens refuses a map with a preloaded
    model, and refuses disk offload), here every module on the CPU by name."""
    placement = {name: "cpu" for name in SPLIT_MAP}
    whole = load_model(tiny_checkpoint, backend="bridge")
    placed = load_model(tiny_checkpoint, backend="bridge", device_map=placement)
    tokens = whole.tokenizer(["Hello world, how are you?"], return_tensors="pt")["input_ids"]
    steer = [Intervention("blocks.1.hook_resid_post", AddVector(torch.linspace(-1, 1, 16), 2.0))]
    logits = []
    for model in (whole, placed):
        with torch.inference_mode(), model.hooks(fwd_hooks=hooks_for(model, steer)):
            logits.append(model(tokens))
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=1e-6)


EDITS = [AddVector(torch.ones(8), 2.0), AblateDirection(torch.ones(8)), Project(torch.eye(8)[:2]),
         SetComponent(torch.ones(8), 3.0), SetUnits(torch.tensor([1, 4]), torch.tensor([0.5, 2.0])),
         Rescale(0.0, torch.tensor([3]))]


@pytest.mark.parametrize("edit", EDITS, ids=lambda edit: type(edit).__name__)
def test_every_edit_follows_the_activations_device_and_dtype(edit):
    """Weights on one device, the activation on another: ``meta`` stands in for a second GPU here (a tensor left on
    the CPU would make the op fail), bfloat16 for a half-precision model."""
    on_other_device = edit(torch.zeros(2, 3, 8, device="meta"))
    assert on_other_device.device.type == "meta" and on_other_device.dtype == torch.float32
    activation = torch.randn(2, 3, 8)
    half = edit(activation.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), edit(activation), rtol=0.05, atol=0.05)


def test_sae_edits_run_on_the_saes_device_and_return_the_activations_dtype():
    from sae_lens import SAE, StandardSAEConfig

    from workbench.features.steer import LatentShift

    torch.manual_seed(0)
    sae = SAE.from_dict(StandardSAEConfig(d_in=8, d_sae=16).to_dict())
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_()
    edit = LatentShift(sae, torch.ones(16), strength=0.5)
    activation = torch.randn(3, 8)
    half = edit(activation.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), edit(activation), rtol=0.05, atol=0.1)


@pytest.mark.model
def test_bf16_steering_matches_fp32_within_the_stated_tolerance(gemma_fast):
    """Stated tolerance, per prompt: KL(fp32 || bf16) of the steered next-token distribution <= 0.05 nats
    (measured: 0.005-0.032), and fp32's top token among bf16's top 3 (near-ties under strong steering can swap the
    first two); the steering itself moves that distribution by at least 10x more."""
    bf16 = load_model(backend="hf", dtype="bf16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    tokenizer = gemma_fast.tokenizer
    prompts = ["Q: What is a spreadsheet?\nA:", "Q: How do I insert a table?\nA:", "Q: Why is the sky blue?\nA:"]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    embedding = gemma_fast.hf_model.model.embed_tokens.weight.detach()
    hindi, english = (tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in (" नमस्ते", " Hello"))
    vector = embedding[hindi] - embedding[english]
    vector = vector / vector.norm() * 400

    def next_token_logprobs(model, strength):
        steer = [Intervention("blocks.6.hook_resid_post", AddVector(vector, strength))]
        with torch.inference_mode(), model.hooks(fwd_hooks=hooks_for(model, steer)):
            logits = model(encoded["input_ids"], attention_mask=encoded["attention_mask"])
        return logits[:, -1].float().log_softmax(-1)

    def kl(p, q):
        return (p.exp() * (p - q)).sum(-1)

    steered, steered_bf16 = next_token_logprobs(gemma_fast, 1.0), next_token_logprobs(bf16, 1.0)
    precision_gap = kl(steered, steered_bf16)
    assert (precision_gap <= 0.05).all(), precision_gap
    assert (kl(steered, next_token_logprobs(gemma_fast, 0.0)) >= 10 * precision_gap.max()).all()
    assert (steered_bf16.topk(3, dim=-1).indices == steered.argmax(-1, keepdim=True)).any(-1).all()


def test_placements_this_machine_cannot_run_fail_before_loading(tiny_checkpoint):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DeviceError, match=f"device_map\\['model.layers.1'\\].*{gpus} CUDA device|needs CUDA"):
        load_model(tiny_checkpoint, backend="hf", device_map={"model.embed_tokens": "cpu", "model.layers.1": 7})
    with pytest.raises(DeviceError, match="unknown device_map 'everywhere'"):
        load_model(tiny_checkpoint, backend="hf", device_map="everywhere")
    with pytest.raises(DeviceError, match="device or device_map, not both"):
        load_model(tiny_checkpoint, backend="hf", device="cpu", device_map="auto")
    with pytest.raises(ModelLoadError, match="disk offload and CPU\\+GPU mixes: model.layers.1"):
        load_model(tiny_checkpoint, backend="bridge", device_map=SPLIT_MAP)
    with pytest.raises(ModelLoadError, match="n_devices=K instead"):
        load_model(tiny_checkpoint, backend="hooked", device_map="auto")
    with pytest.raises(ModelLoadError, match="device_map='auto'"):
        load_model(tiny_checkpoint, backend="hf", n_devices=2)
    with pytest.raises(DeviceError, match="unknown dtype 'int8'"):
        load_model(tiny_checkpoint, backend="hf", dtype="int8")
    with pytest.raises(DeviceError, match="floating point"):
        parse_dtype(torch.int32)
    if gpus == 0:
        with pytest.raises(DeviceError, match="does not have"):
            check_device("cuda:1")
    with pytest.raises(DeviceError, match="cannot read device"):
        check_device("gpu0")
    with pytest.raises(DeviceError, match="module names"):
        check_device_map({"model.layers.9": "cpu"}, module_names={"model.layers.0", "model.layers.1"})
    check_dtype_runs(torch.bfloat16, torch.device("cpu"))
    assert parse_dtype("bf16") is torch.bfloat16 and check_device_map("auto") == "auto"
