"""Generation with hooks active, batched and KV-cached on every backend.

Hooks are TransformerLens ``(hook_name, fn)`` pairs, usually made by :mod:`workbench.interventions`; each batch
declares where its (left-padded) prompts end, so position rules such as "prompt-final + first k steps" know the
absolute position of every decoding step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.backends import Model, Sampling, StepReducer, device_of, generate_tokens
from workbench.errors import WorkbenchError
from workbench.interventions import Hook, prompt_ends


class SteeringError(WorkbenchError):
    """Bad generation input (no prompts, more recorded steps than generated)."""


@dataclass(frozen=True)
class Generation:
    """Continuations and, when a step reducer was given, its values for the first generated steps."""

    texts: list[str]
    """New text per prompt (prompt and special tokens stripped)."""
    step_values: Tensor | None
    """``(prompt, step, ...)``: the reducer applied to the next-token logits of the first ``record_steps`` steps."""


def generate_recording(model: Model, prompts: Sequence[str], *, hooks: Sequence[Hook] = (),
                       step_reducer: StepReducer | None = None, record_steps: int = 3, max_new_tokens: int = 32,
                       do_sample: bool = False, temperature: float = 1.0, batch_size: int = 8,
                       stop_at_eos: bool = True) -> Generation:
    """Continuations of ``prompts`` with ``hooks`` active (greedy unless ``do_sample``), applying ``step_reducer``
    to the next-token logits of the first ``record_steps`` steps, which generation computes anyway.

    Uses the KV cache on every backend: HF ``generate`` for the ``hf`` backend, TransformerLens' own otherwise.
    Prompts are left-padded in batches of at most ``batch_size`` (as even as possible, so the last batch is not a
    near-empty one that costs a whole pass), so every prompt of a batch ends at the same column.
    ``stop_at_eos=False`` always generates ``max_new_tokens`` tokens (fixed-length runs, benchmarks).
    """
    if not prompts:
        raise SteeringError("no prompts to generate from")
    if step_reducer is not None and record_steps > max_new_tokens:
        raise SteeringError(f"record_steps={record_steps} exceeds max_new_tokens={max_new_tokens}")
    tokenizer = model.tokenizer
    device = device_of(model)
    sampling = Sampling(max_new_tokens, do_sample, temperature, stop_at_eos)
    texts: list[str] = []
    recorded: list[Tensor] = []
    with model.hooks(fwd_hooks=list(hooks)), torch.inference_mode():
        size = math.ceil(len(prompts) / math.ceil(len(prompts) / batch_size))
        for start in range(0, len(prompts), size):
            chunk = list(prompts[start:start + size])
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left").to(device)
            prompt_length = encoded["input_ids"].shape[1]
            with prompt_ends(prompt_length - 1):
                tokens, steps = generate_tokens(model, chunk, encoded, sampling, step_reducer=step_reducer,
                                                record_steps=record_steps)
            if steps is not None:
                recorded.append(steps)
            texts += tokenizer.batch_decode(tokens[:, prompt_length:], skip_special_tokens=True)
    return Generation(texts=texts, step_values=torch.cat(recorded).cpu() if recorded else None)


def generate(model: Model, prompts: Sequence[str], *, hooks: Sequence[Hook] = (), max_new_tokens: int = 32,
             do_sample: bool = False, temperature: float = 1.0, batch_size: int = 8) -> list[str]:
    """Continuations of ``prompts`` (new text only) with ``hooks`` active; see :func:`generate_recording`."""
    return generate_recording(model, prompts, hooks=hooks, max_new_tokens=max_new_tokens, do_sample=do_sample,
                              temperature=temperature, batch_size=batch_size).texts
