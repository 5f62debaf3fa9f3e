"""Steering hooks and generation with hooks active.

Hook functions follow TransformerLens' ``(activation, hook) -> activation`` convention and are plain functions
bound with :func:`functools.partial`, so any hook set works on every backend of :func:`workbench.models.load_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.sites import resolve_site

Hook = tuple[str, Any]


class SteeringError(WorkbenchError):
    """Bad steering input (vector width, empty prompts)."""


def _add(activation: Float[Tensor, "batch pos d"], hook: Any, *, vector: Tensor, strength: float) -> Tensor:
    return activation + strength * vector.to(activation.dtype)


def add_vector(model: Any, site: str, vector: Float[Tensor, " d"], strength: float = 1.0) -> Hook:
    """A hook adding ``strength * vector`` at every position of ``site`` (strength 0 is the identity)."""
    resolved = resolve_site(model, site)
    width = resolved.width(model)
    if vector.shape != (width,):
        raise SteeringError(f"vector for {resolved} must have shape ({width},), got {tuple(vector.shape)}")
    device = next(model.parameters()).device
    return resolved.hook_name, partial(_add, vector=vector.to(device), strength=strength)


def generate(model: Any, prompts: Sequence[str], *, hooks: Sequence[Hook] = (), max_new_tokens: int = 32,
             do_sample: bool = False, temperature: float = 1.0, batch_size: int = 8) -> list[str]:
    """Continuations of ``prompts`` (new text only) with ``hooks`` active, greedy unless ``do_sample``.

    Uses the KV cache on every backend: HF ``generate`` for the ``hf`` backend, TransformerLens' own otherwise.
    """
    if not prompts:
        raise SteeringError("no prompts to generate from")
    tokenizer = model.tokenizer
    device = next(model.parameters()).device
    outputs: list[str] = []
    with model.hooks(fwd_hooks=list(hooks)), torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left").to(device)
            prompt_length = encoded["input_ids"].shape[1]
            if hasattr(model, "generate_tokens"):
                sample_args = {"temperature": temperature} if do_sample else {"top_p": None, "top_k": None}
                tokens = model.generate_tokens(encoded["input_ids"], encoded["attention_mask"],
                                               max_new_tokens=max_new_tokens, do_sample=do_sample,
                                               pad_token_id=tokenizer.pad_token_id, **sample_args)
            else:
                tokens = model.generate(chunk, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                        temperature=temperature, padding_side="left", verbose=False,
                                        return_type="tokens")
            outputs += tokenizer.batch_decode(tokens[:, prompt_length:], skip_special_tokens=True)
    return outputs
