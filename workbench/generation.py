"""Generation with hooks active, batched and KV-cached on every backend.

Hooks are TransformerLens ``(hook_name, fn)`` pairs, usually made by :mod:`workbench.interventions`; each batch
declares where its (left-padded) prompts end, so position rules such as "prompt-final + first k steps" know the
absolute position of every decoding step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList

from workbench.errors import WorkbenchError
from workbench.hf_backend import HFHookedModel
from workbench.interventions import Hook, prompt_ends


class SteeringError(WorkbenchError):
    """Bad generation input (no prompts, more recorded steps than generated)."""


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


def _generate_batch(model: Any, chunk: list[str], encoded: Any, step_reducer: StepReducer | None,
                    record_steps: int, max_new_tokens: int, do_sample: bool, temperature: float, stop_at_eos: bool
                    ) -> tuple[Tensor, Tensor | None]:
    """Prompt + new tokens of one left-padded batch, and the reduced logits of its first steps (if asked)."""
    if isinstance(model, HFHookedModel):
        recorder = _StepRecorder(step_reducer, record_steps) if step_reducer is not None else None
        sample_args = {"temperature": temperature} if do_sample else {"top_p": None, "top_k": None}
        if not stop_at_eos:
            sample_args["min_new_tokens"] = max_new_tokens
        tokens = model.generate_tokens(
            encoded["input_ids"], encoded["attention_mask"], max_new_tokens=max_new_tokens, do_sample=do_sample,
            pad_token_id=model.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([recorder] if recorder else []), **sample_args)
        return tokens, torch.stack(recorder.records, dim=1) if recorder is not None else None
    output = model.generate(chunk, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                            padding_side="left", verbose=False, return_type="tokens", stop_at_eos=stop_at_eos,
                            output_logits=step_reducer is not None)
    if step_reducer is None:
        return output, None
    return output.sequences, torch.stack([step_reducer(step) for step in output.logits[:record_steps]], dim=1)


def generate_recording(model: Any, prompts: Sequence[str], *, hooks: Sequence[Hook] = (),
                       step_reducer: StepReducer | None = None, record_steps: int = 3, max_new_tokens: int = 32,
                       do_sample: bool = False, temperature: float = 1.0, batch_size: int = 8,
                       stop_at_eos: bool = True) -> Generation:
    """Continuations of ``prompts`` with ``hooks`` active (greedy unless ``do_sample``), applying ``step_reducer``
    to the next-token logits of the first ``record_steps`` steps, which generation computes anyway.

    Uses the KV cache on every backend: HF ``generate`` for the ``hf`` backend, TransformerLens' own otherwise.
    Prompts are left-padded in batches of ``batch_size``, so every prompt of a batch ends at the same column.
    ``stop_at_eos=False`` always generates ``max_new_tokens`` tokens (fixed-length runs, benchmarks).
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
            with prompt_ends(prompt_length - 1):
                tokens, steps = _generate_batch(model, chunk, encoded, step_reducer, record_steps, max_new_tokens,
                                                do_sample, temperature, stop_at_eos)
            if steps is not None:
                recorded.append(steps)
            texts += tokenizer.batch_decode(tokens[:, prompt_length:], skip_special_tokens=True)
    return Generation(texts=texts, step_values=torch.cat(recorded).cpu() if recorded else None)


def generate(model: Any, prompts: Sequence[str], *, hooks: Sequence[Hook] = (), max_new_tokens: int = 32,
             do_sample: bool = False, temperature: float = 1.0, batch_size: int = 8) -> list[str]:
    """Continuations of ``prompts`` (new text only) with ``hooks`` active; see :func:`generate_recording`."""
    return generate_recording(model, prompts, hooks=hooks, max_new_tokens=max_new_tokens, do_sample=do_sample,
                              temperature=temperature, batch_size=batch_size).texts
