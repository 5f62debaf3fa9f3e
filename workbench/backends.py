"""What the workbench needs of a loaded model (:class:`Model`), and the few operations whose code differs by backend.

Every function of the workbench takes a :class:`Model`: a TransformerLens ``HookedTransformer``, a
``TransformerBridge`` or the ``hf`` backend's :class:`~workbench.hf_backend.HFHookedModel`, as returned by
:func:`workbench.models.load_model`. Callers never branch on the backend: the branches live here.

* :func:`forward_to` -- one forward pass with hooks active that runs only the blocks the hooks need (harvesting,
  pooling, relevance, SAE data);
* :func:`position_logits` -- logits at chosen positions only, chunked, without materialising the unembedding for
  every position when the backend can stop at the final norm;
* :func:`generate_tokens` -- KV-cached generation (HF ``generate`` or TransformerLens' own), optionally recording
  the first steps' logits;
* :func:`mlp_write_weights` -- the MLP's output projection and its post-norm, as each backend stores them;
* :func:`can_prefill` -- whether the backend can reuse a KV-cached prompt prefix (the ``hf`` backend).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from workbench.errors import WorkbenchError

Hook = tuple[str, Any]
"""A TransformerLens forward hook: ``(hook_name, fn(activation, hook) -> activation)``."""

UNEMBED_CHUNK = 256
"""Rows per unembedding chunk: 256 x 262k floats = 268 MB."""

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


class BackendError(WorkbenchError):
    """The model lacks something an operation needs (e.g. an MLP layout tracing cannot read)."""


@runtime_checkable
class Model(Protocol):
    """What the workbench needs of a loaded model (any backend of :func:`workbench.models.load_model`).

    ``cfg`` has TransformerLens' fields ``n_layers``, ``d_model``, ``d_mlp``, ``d_vocab`` (and ``gated_mlp``,
    ``act_fn`` for the neuron methods); ``tokenizer`` is an HF tokenizer; ``hooks(fwd_hooks=...)`` activates
    TransformerLens hooks named ``blocks.{l}.hook_resid_post``, ``blocks.{l}.mlp.hook_post`` ...; calling the model
    on tokens (with ``attention_mask``) gives logits, and with ``stop_at_layer=n`` runs blocks ``0..n-1`` only.
    """

    cfg: Any
    tokenizer: Any

    def hooks(self, fwd_hooks: Any = ..., *args: Any, **kwargs: Any) -> AbstractContextManager[Any]: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


def _is_hf_backend(model: Model) -> bool:
    from workbench.hf_backend import HFHookedModel  # imports TransformerLens: only when a model exists

    return isinstance(model, HFHookedModel)


def device_of(model: Model) -> torch.device:
    """Where the model's inputs go: the device of its first weights (the embedding's, for a model spread over
    several devices by a device map)."""
    if _is_hf_backend(model):
        from workbench.hf_backend import input_device

        return input_device(model.hf_model)
    return next(model.parameters()).device


def hook_depth(model: Model, hook_name: str) -> int:
    """How many blocks must run for ``hook_name`` to fire (all of them for hooks outside the blocks)."""
    match = _BLOCK_HOOK.match(hook_name)
    return int(match.group(1)) + 1 if match else model.cfg.n_layers


def forward_to(model: Model, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"] | None,
               hooks: Sequence[Hook], *, extra_hooks: Sequence[Hook] = ()) -> None:
    """One forward pass with ``extra_hooks`` then ``hooks`` active, stopping after the deepest block that a hook
    in ``hooks`` needs (the hooks record what they want; nothing is returned)."""
    if not hooks:
        raise BackendError("forward_to needs at least one hook to run for")
    depth = max(hook_depth(model, name) for name, _ in hooks)
    device = device_of(model)
    with model.hooks(fwd_hooks=[*extra_hooks, *hooks]):
        model(tokens.to(device), attention_mask=None if attention_mask is None else attention_mask.to(device),
              stop_at_layer=depth)


def _final_hidden(model: Model, tokens: Tensor, mask: Tensor) -> Float[Tensor, "batch pos d_model"] | None:
    """The final-norm residual stream with active hooks applied, or None when the backend offers no such path."""
    if _is_hf_backend(model):
        return model.hidden_states(tokens, mask)
    from transformer_lens import HookedTransformer

    if isinstance(model, HookedTransformer):  # the bridge's stop_at_layer gives logits, not the residual stream
        return model.ln_final(model(tokens, attention_mask=mask, stop_at_layer=model.cfg.n_layers))
    return None


def final_hidden_states(model: Model, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
                        ) -> Float[Tensor, "batch pos d_model"]:
    """The final-norm residual stream (what the unembedding reads) with active hooks applied, gradients kept."""
    hidden = _final_hidden(model, tokens.to(device_of(model)), mask.to(device_of(model)))
    if hidden is None:
        raise BackendError(f"{type(model).__name__} offers no final-norm residual stream; use backend='hf' or "
                           "'hooked'")
    return hidden


def adapted_copy(model: Model, adapt: Callable[[nn.Module], nn.Module]) -> Model:
    """A new ``hf``-backend model with ``model``'s weights, after ``adapt`` changed its HF module (e.g. injected
    LoRA adapters) and before the hook points are attached, so every hook sees the adapted projections."""
    if not _is_hf_backend(model):
        raise BackendError(f"adapting a model's weights needs the hf backend (load_model(backend='hf')), got "
                           f"{type(model).__name__}")
    from workbench.hf_backend import HFHookedModel

    source = model.hf_model
    copy = type(source)(source.config)
    copy.load_state_dict(source.state_dict())
    return HFHookedModel(adapt(copy.eval()), model.tokenizer, model.cfg.model_name)


def final_norm(model: Model, residual: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows d_model"]:
    """The model's own final norm (with its learned scale) applied to residual-stream vectors: what the
    unembedding reads after the last block (the logit lens applies it after every block)."""
    if _is_hf_backend(model):
        return model.final_norm(residual)
    return model.ln_final(residual)


def unembed(model: Model, hidden: Float[Tensor, "row d_model"]) -> Float[Tensor, "row vocab"]:
    """Logits of final-norm residual rows (with the model's final soft-cap, if any)."""
    if _is_hf_backend(model):
        return model.unembed(hidden)
    logits = model.unembed(hidden.unsqueeze(0))[0]
    cap = getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0
    return torch.tanh(logits / cap) * cap if cap > 0 else logits


def position_logits(model: Model, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
                    positions: Bool[Tensor, "batch pos"], reduce: Callable[[Tensor, slice], Tensor], *,
                    chunk: int = UNEMBED_CHUNK) -> Tensor:
    """``reduce(logits, rows)`` over the logits at ``positions`` (row-major order), ``chunk`` rows at a time,
    concatenated. Hooks active around the call apply. ``rows`` is the chunk's slice of the selected positions.

    The ``hf`` backend and HookedTransformer unembed only the selected rows; other backends compute full logits.
    """
    device = device_of(model)
    tokens, attention_mask, positions = tokens.to(device), attention_mask.to(device), positions.to(device)
    hidden = _final_hidden(model, tokens, attention_mask)
    if hidden is None:
        selected = model(tokens, attention_mask=attention_mask)[positions]
        to_logits = lambda rows: rows  # noqa: E731 - these rows are logits already
    else:
        selected = hidden[positions]
        to_logits = lambda rows: unembed(model, rows)  # noqa: E731
    parts = [reduce(to_logits(selected[start:start + chunk]), slice(start, min(start + chunk, len(selected))))
             for start in range(0, len(selected), chunk)]
    return torch.cat(parts) if parts else torch.empty(0)


StepReducer = Callable[[Float[Tensor, "batch vocab"]], Tensor]
"""Maps one step's next-token logits to a small per-prompt summary (e.g. language mass)."""


class _StepRecorder:
    """A logits processor that applies a reducer to the raw next-token logits of the first steps and leaves the
    scores unchanged."""

    def __init__(self, reducer: StepReducer, steps: int):
        self.reducer, self.steps, self.records = reducer, steps, []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if len(self.records) < self.steps:
            self.records.append(self.reducer(scores))
        return scores


@dataclass(frozen=True)
class Sampling:
    """How new tokens are chosen."""

    max_new_tokens: int
    """Tokens to generate per prompt."""
    do_sample: bool = False
    """Sample (True) or greedy (False)."""
    temperature: float = 1.0
    """Sampling temperature (ignored when greedy)."""
    stop_at_eos: bool = True
    """Stop a row at EOS; False always generates ``max_new_tokens`` tokens."""


def generate_tokens(model: Model, prompts: Sequence[str], encoded: Any, sampling: Sampling, *,
                    step_reducer: StepReducer | None = None, record_steps: int = 0
                    ) -> tuple[Int[Tensor, "batch total"], Tensor | None]:
    """Prompt + new tokens of one left-padded batch (``encoded`` is its tokenisation) with the active hooks, and
    ``step_reducer`` applied to the next-token logits of the first ``record_steps`` steps (None without one)."""
    if _is_hf_backend(model):
        from transformers import LogitsProcessorList

        recorder = _StepRecorder(step_reducer, record_steps) if step_reducer is not None else None
        sample_args = {"temperature": sampling.temperature} if sampling.do_sample else {"top_p": None, "top_k": None}
        if not sampling.stop_at_eos:
            sample_args["min_new_tokens"] = sampling.max_new_tokens
        tokens = model.generate_tokens(
            encoded["input_ids"], encoded["attention_mask"], max_new_tokens=sampling.max_new_tokens,
            do_sample=sampling.do_sample, pad_token_id=model.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([recorder] if recorder else []), **sample_args)
        return tokens, torch.stack(recorder.records, dim=1) if recorder is not None else None
    output = model.generate(list(prompts), max_new_tokens=sampling.max_new_tokens, do_sample=sampling.do_sample,
                            temperature=sampling.temperature, padding_side="left", verbose=False,
                            return_type="tokens", stop_at_eos=sampling.stop_at_eos,
                            output_logits=step_reducer is not None)
    if step_reducer is None:
        return output, None
    return output.sequences, torch.stack([step_reducer(step) for step in output.logits[:record_steps]], dim=1)


@dataclass(frozen=True)
class MLPWriteWeights:
    """How one layer's MLP writes into the residual stream: ``norm(post @ w_out + bias)`` with an optional
    RMS post-norm of ``gain`` and ``eps``."""

    w_out: Float[Tensor, "d_mlp d_model"]
    """Output projection (float32, detached)."""
    bias: Float[Tensor, " d_model"] | None
    """Output bias, if any."""
    gain: Float[Tensor, " d_model"] | None
    """The post-MLP RMSNorm's effective gain (None without a post-norm)."""
    eps: float | None
    """The post-norm's epsilon (None without a post-norm)."""


def mlp_write_weights(model: Model, layer: int) -> MLPWriteWeights:
    """The MLP write map of ``layer`` on the ``hf`` backend or a HookedTransformer."""
    if _is_hf_backend(model):
        block = model.layers[layer]
        down = block.mlp.down_proj
        bias = None if down.bias is None else down.bias.detach().float()
        norm = getattr(block, "post_feedforward_layernorm", None)
        if norm is None:
            return MLPWriteWeights(down.weight.detach().float().T, bias, None, None)
        eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6))
        return MLPWriteWeights(down.weight.detach().float().T, bias, 1.0 + norm.weight.detach().float(), float(eps))
    from transformer_lens import HookedTransformer

    # The bridge exposes W_out, but its post-norm weights are HF's raw ones (Gemma's gain is 1 + w): refuse it.
    if not isinstance(model, HookedTransformer):
        raise BackendError("reading MLP write weights needs the 'hf' backend or a HookedTransformer, not "
                           f"{type(model).__name__}; load the model with backend='hf' or backend='hooked'")
    block = model.blocks[layer]
    bias = getattr(block.mlp, "b_out", None)
    bias = None if bias is None else bias.detach().float()
    post = getattr(block, "ln2_post", None)
    if post is None:
        return MLPWriteWeights(block.mlp.W_out.detach().float(), bias, None, None)
    if "RMS" not in type(post).__name__:
        raise BackendError(f"a post-MLP {type(post).__name__} is not supported (RMSNorm only)")
    return MLPWriteWeights(block.mlp.W_out.detach().float(), bias, post.w.detach().float(), float(post.eps))


def can_prefill(model: Model) -> bool:
    """Whether the model offers ``prefill`` / ``extend`` (a reusable KV-cached prompt prefix): the ``hf`` backend."""
    return _is_hf_backend(model)
