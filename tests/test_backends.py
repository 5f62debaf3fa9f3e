"""The backend seam: every backend is a `Model`, and the operations whose code differs by backend give the same
numbers on the real model whichever backend runs them."""

from __future__ import annotations

import pytest
import torch

from workbench.backends import (
    BackendError,
    Model,
    can_prefill,
    forward_to,
    hook_depth,
    mlp_write_weights,
    position_logits,
)

TEXTS = ["The cat sat on the mat.", "El gato se sentó en la alfombra, tranquilo."]


def _encode(model, texts=TEXTS):
    return model.tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")


def test_every_backend_and_a_tiny_model_is_a_model(gemma_fast, gemma_hooked, gemma_bridge, tiny_model):
    for model in (gemma_fast, gemma_hooked, gemma_bridge, tiny_model):
        assert isinstance(model, Model)
    assert not isinstance(object(), Model)


def test_hook_depth_runs_only_the_blocks_a_hook_needs(gemma_fast):
    assert hook_depth(gemma_fast, "blocks.3.hook_resid_post") == 4
    assert hook_depth(gemma_fast, "blocks.0.mlp.hook_post") == 1
    assert hook_depth(gemma_fast, "ln_final.hook_normalized") == gemma_fast.cfg.n_layers


@pytest.mark.parametrize("fixture", ["gemma_fast", "gemma_hooked"])
def test_forward_to_stops_after_the_deepest_hooked_block(fixture, request):
    model = request.getfixturevalue(fixture)
    encoded = _encode(model)
    fired: list[str] = []
    record = lambda activation, hook: fired.append(hook.name)  # noqa: E731
    deeper = [(f"blocks.{layer}.hook_resid_post", record) for layer in (3, 4, 10)]
    with model.hooks(fwd_hooks=deeper):  # hooks beyond the stop must not fire
        forward_to(model, encoded["input_ids"], encoded["attention_mask"], [("blocks.2.hook_resid_post", record)])
    assert fired == ["blocks.2.hook_resid_post"]
    with pytest.raises(BackendError, match="at least one hook"):
        forward_to(model, encoded["input_ids"], encoded["attention_mask"], [])


def test_position_logits_match_the_full_forward_on_every_backend(gemma_fast, gemma_hooked, gemma_bridge):
    encoded = _encode(gemma_fast)
    tokens, mask = encoded["input_ids"], encoded["attention_mask"]
    positions = mask.bool().clone()
    positions[:, 0] = False  # skip BOS, as the NLL does
    with torch.inference_mode():
        reference = gemma_fast(tokens, attention_mask=mask)[positions].float()
        for model in (gemma_fast, gemma_hooked, gemma_bridge):
            chunked = position_logits(model, tokens, mask, positions, lambda logits, _: logits.float(), chunk=3)
            assert chunked.shape == reference.shape
            assert torch.allclose(chunked, reference, atol=2e-3), type(model).__name__
            rows_seen = position_logits(model, tokens, mask, positions,
                                        lambda logits, rows: torch.arange(rows.start, rows.stop), chunk=4)
            assert rows_seen.tolist() == list(range(int(positions.sum())))


def test_mlp_write_weights_agree_across_backends(gemma_fast, gemma_hooked, gemma_bridge):
    fast, hooked = mlp_write_weights(gemma_fast, 5), mlp_write_weights(gemma_hooked, 5)
    assert fast.w_out.shape == (gemma_fast.cfg.d_mlp, gemma_fast.cfg.d_model)
    assert torch.allclose(fast.w_out, hooked.w_out)
    assert torch.allclose(fast.gain, hooked.gain, atol=1e-6)
    assert fast.eps == pytest.approx(hooked.eps)
    with pytest.raises(BackendError, match="TransformerBridge"):
        mlp_write_weights(gemma_bridge, 5)


def test_prefill_then_extend_equals_the_full_forward(gemma_fast, gemma_hooked):
    assert can_prefill(gemma_fast) and not can_prefill(gemma_hooked)
    encoded = gemma_fast.tokenizer(TEXTS, return_tensors="pt", padding=True, padding_side="left")
    tokens, mask = encoded["input_ids"], encoded["attention_mask"]
    with torch.inference_mode():
        cache = gemma_fast.prefill(tokens[:, :-1], mask[:, :-1])
        last = gemma_fast.extend(cache, tokens[:, -1:], mask, (mask.sum(-1) - 1).unsqueeze(-1))[:, -1]
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        full = gemma_fast.hf_model.model(input_ids=tokens, attention_mask=mask, position_ids=positions
                                         ).last_hidden_state[:, -1]
    assert torch.allclose(last, full, atol=1e-3)
