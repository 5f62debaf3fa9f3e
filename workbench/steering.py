"""Steering hooks and generation with hooks active.

Hook functions follow TransformerLens' ``(activation, hook) -> activation`` convention and are plain functions
bound with :func:`functools.partial`, so any hook set works on every backend of :func:`workbench.models.load_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList

from workbench.errors import WorkbenchError
from workbench.hf_backend import HFHookedModel
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


StepReducer = Callable[[Float[Tensor, "batch vocab"]], Tensor]
"""Maps one step's next-token logits to a small per-prompt summary (e.g. language mass)."""


@dataclass(frozen=True)
class Generation:
    """Continuations and, when a step reducer was given, its values for the first generated steps."""

    texts: list[str]
    """New text per prompt (prompt and special tokens stripped)."""
    step_values: Tensor | None
    """``(prompt, step, ...)``: the reducer applied to the next-token logits of the first ``record_steps`` steps."""


class _StepRecorder(LogitsProcessor):
    """Applies a reducer to the raw next-token logits of the first steps; leaves the scores unchanged."""

    def __init__(self, reducer: StepReducer, steps: int):
        self.reducer, self.steps, self.records = reducer, steps, []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if len(self.records) < self.steps:
            self.records.append(self.reducer(scores))
        return scores


def generate_recording(model: Any, prompts: Sequence[str], *, hooks: Sequence[Hook] = (),
                       step_reducer: StepReducer | None = None, record_steps: int = 3, max_new_tokens: int = 32,
                       do_sample: bool = False, temperature: float = 1.0, batch_size: int = 8) -> Generation:
    """Continuations of ``prompts`` with ``hooks`` active (greedy unless ``do_sample``), applying ``step_reducer``
    to the next-token logits of the first ``record_steps`` steps, which generation computes anyway.

    Uses the KV cache on every backend: HF ``generate`` for the ``hf`` backend, TransformerLens' own otherwise.
    Prompts are left-padded in batches of ``batch_size``.
    """
    if not prompts:
        raise SteeringError("no prompts to generate from")
    if step_reducer is not None and record_steps > max_new_tokens:
        raise SteeringError(f"record_steps={record_steps} exceeds max_new_tokens={max_new_tokens}")
    tokenizer = model.tokenizer
    device = next(model.parameters()).device
    texts: list[str] = []
    recorded: list[Tensor] = []
    with model.hooks(fwd_hooks=list(hooks)), torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left").to(device)
            prompt_length = encoded["input_ids"].shape[1]
            if isinstance(model, HFHookedModel):
                recorder = _StepRecorder(step_reducer, record_steps) if step_reducer is not None else None
                sample_args = {"temperature": temperature} if do_sample else {"top_p": None, "top_k": None}
                tokens = model.generate_tokens(
                    encoded["input_ids"], encoded["attention_mask"], max_new_tokens=max_new_tokens,
                    do_sample=do_sample, pad_token_id=tokenizer.pad_token_id,
                    logits_processor=LogitsProcessorList([recorder] if recorder else []), **sample_args)
                if recorder is not None:
                    recorded.append(torch.stack(recorder.records, dim=1))
            else:
                output = model.generate(chunk, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                        temperature=temperature, padding_side="left", verbose=False,
                                        return_type="tokens", output_logits=step_reducer is not None)
                tokens = output.sequences if step_reducer is not None else output
                if step_reducer is not None:
                    recorded.append(torch.stack([step_reducer(step) for step in output.logits[:record_steps]],
                                                dim=1))
            texts += tokenizer.batch_decode(tokens[:, prompt_length:], skip_special_tokens=True)
    return Generation(texts=texts, step_values=torch.cat(recorded).cpu() if recorded else None)


def generate(model: Any, prompts: Sequence[str], *, hooks: Sequence[Hook] = (), max_new_tokens: int = 32,
             do_sample: bool = False, temperature: float = 1.0, batch_size: int = 8) -> list[str]:
    """Continuations of ``prompts`` (new text only) with ``hooks`` active; see :func:`generate_recording`."""
    return generate_recording(model, prompts, hooks=hooks, max_new_tokens=max_new_tokens, do_sample=do_sample,
                              temperature=temperature, batch_size=batch_size).texts
