"""The ``"hf"`` backend: the plain HF model, with TransformerLens hook points at module boundaries.

TransformerLens' bridge re-implements attention in Python so that it can expose attention patterns; on a CPU that
costs ~3x the HF model's fused (SDPA) attention. Most of the workbench reads and writes only residual and MLP
sites, so this backend keeps HF's own forward pass and fires real :class:`transformer_lens.hook_points.HookPoint`
objects, named exactly as in TransformerLens (``blocks.{l}.hook_resid_post``, ``blocks.{l}.mlp.hook_post`` ...),
from PyTorch module hooks. Everything built on TL hooks (``model.hooks(...)``, ``run_with_hooks``,
``run_with_cache``) works unchanged; attention-internal hooks (patterns, q/k/v) are not offered here: use the
``hooked`` or ``bridge`` backend for those.

Supported HF layouts: Gemma 2/3 (sandwich norms) and Llama-style decoders (Llama, Mistral, Qwen2/3), all with a
gated MLP named ``gate_proj`` / ``up_proj`` / ``down_proj``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookedRootModule, HookPoint

from workbench.errors import WorkbenchError

_SANDWICH_NORM_TYPES = ("gemma2", "gemma3", "gemma3_text")
_PRE_NORM_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class UnsupportedArchitectureError(WorkbenchError):
    """The HF model's layout is not one the ``hf`` backend knows how to hook."""


@dataclass(frozen=True)
class HFModelConfig:
    """The TransformerLens-style config fields the workbench reads from any backend."""

    model_name: str
    """HF model type or name."""
    n_layers: int
    """Number of decoder layers."""
    d_model: int
    """Residual width."""
    d_mlp: int
    """MLP hidden width."""
    d_vocab: int
    """Vocabulary size."""
    n_heads: int
    """Attention heads."""
    act_fn: str
    """Name of the MLP gate's activation function (HF's ``hidden_activation`` or ``hidden_act``)."""
    gated_mlp: bool = True
    """Every supported layout has a gated MLP."""
    device: str = "cpu"
    """Device of the weights."""


def input_device(hf_model: nn.Module) -> torch.device:
    """Where input ids go: the embedding's device (under an accelerate device map, the first module's placement;
    an embedding offloaded to disk runs on the CPU)."""
    placement = getattr(hf_model, "hf_device_map", None)
    if placement:
        embedding = next((device for name, device in placement.items() if "embed_tokens" in name or name == ""),
                         next(iter(placement.values())))
        if embedding == "disk":
            return torch.device("cpu")
        return torch.device(f"cuda:{embedding}" if isinstance(embedding, int) else embedding)
    return next(hf_model.parameters()).device


class _StopForward(Exception):
    """Raised after the last needed layer to skip the rest of the model (and the unembedding)."""


class _MLPHooks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()


class _BlockHooks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.mlp = _MLPHooks()


def _replace_output(hook_point: HookPoint):
    def forward_hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (hook_point(output[0]), *output[1:])
        return hook_point(output)

    return forward_hook


def _replace_first_input(hook_point: HookPoint):
    def forward_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            return (hook_point(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hook_point(kwargs["hidden_states"])}

    return forward_pre_hook


class HFHookedModel(HookedRootModule):
    """An HF causal LM whose residual and MLP sites are TransformerLens hook points."""

    def __init__(self, hf_model: nn.Module, tokenizer: Any, model_name: str | None = None):
        super().__init__()
        config = hf_model.config
        model_type = getattr(config, "model_type", "")
        if model_type not in _SANDWICH_NORM_TYPES + _PRE_NORM_TYPES:
            raise UnsupportedArchitectureError(
                f"the 'hf' backend does not know the layout of model_type {model_type!r}; supported: "
                f"{', '.join(_SANDWICH_NORM_TYPES + _PRE_NORM_TYPES)}. Use backend='hooked' or 'bridge'."
            )
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.cfg = HFModelConfig(
            model_name=model_name or model_type, n_layers=config.num_hidden_layers, d_model=config.hidden_size,
            d_mlp=config.intermediate_size, d_vocab=config.vocab_size, n_heads=config.num_attention_heads,
            act_fn=getattr(config, "hidden_activation", None) or config.hidden_act,
            device=str(input_device(hf_model)),
        )
        self.blocks = nn.ModuleList([_BlockHooks() for _ in range(self.cfg.n_layers)])
        self._sandwich_norms = model_type in _SANDWICH_NORM_TYPES
        self._stop_at_layer: int | None = None
        self._attach()
        self.setup()

    @property
    def layers(self) -> nn.ModuleList:
        return self.hf_model.model.layers

    def _attach(self) -> None:
        for index, (layer, hooks) in enumerate(zip(self.layers, self.blocks, strict=True)):
            mlp = layer.mlp
            layer.register_forward_pre_hook(_replace_first_input(hooks.hook_resid_pre), with_kwargs=True)
            layer.register_forward_hook(_replace_output(hooks.hook_resid_post))
            layer.register_forward_hook(self._stop_after(index))
            mlp.gate_proj.register_forward_hook(_replace_output(hooks.mlp.hook_pre))
            mlp.up_proj.register_forward_hook(_replace_output(hooks.mlp.hook_pre_linear))
            mlp.down_proj.register_forward_pre_hook(_replace_first_input(hooks.mlp.hook_post), with_kwargs=True)
            if self._sandwich_norms:
                # Gemma: x + post_attention_norm(attn(...)), then x + post_feedforward_norm(mlp(pre_ff_norm(x))).
                layer.post_attention_layernorm.register_forward_hook(_replace_output(hooks.hook_attn_out))
                layer.pre_feedforward_layernorm.register_forward_pre_hook(
                    _replace_first_input(hooks.hook_resid_mid), with_kwargs=True)
                layer.post_feedforward_layernorm.register_forward_hook(_replace_output(hooks.hook_mlp_out))
            else:
                layer.self_attn.register_forward_hook(_replace_output(hooks.hook_attn_out))
                layer.post_attention_layernorm.register_forward_pre_hook(
                    _replace_first_input(hooks.hook_resid_mid), with_kwargs=True)
                mlp.register_forward_hook(_replace_output(hooks.hook_mlp_out))

    def _stop_after(self, index: int):
        def forward_hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._stop_at_layer is not None and index == self._stop_at_layer - 1:
                raise _StopForward

        return forward_hook

    def forward(self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"] | None = None,
                stop_at_layer: int | None = None, return_type: str | None = "logits",
                ) -> Float[Tensor, "batch pos d_vocab"] | None:
        """Logits like TransformerLens; with ``stop_at_layer=n`` only blocks ``0..n-1`` run and None is returned."""
        if stop_at_layer is not None:
            self._stop_at_layer = stop_at_layer
            try:
                self.hf_model.model(input_ids=tokens, attention_mask=attention_mask, use_cache=False)
            except _StopForward:
                pass
            finally:
                self._stop_at_layer = None
            return None
        logits = self.hf_model(input_ids=tokens, attention_mask=attention_mask, use_cache=False).logits
        return logits if return_type == "logits" else None

    def generate_tokens(self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
                        **generate_kwargs: Any) -> Int[Tensor, "batch total"]:
        """HF ``generate`` (KV cache) with whatever hooks are active; returns prompt + new tokens."""
        return self.hf_model.generate(input_ids=tokens, attention_mask=attention_mask, **generate_kwargs)

    def prefill(self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]) -> Any:
        """The KV cache of a left-padded prompt prefix (hooks active now apply to it), for :meth:`extend`."""
        positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        return self.hf_model.model(input_ids=tokens, attention_mask=attention_mask, position_ids=positions,
                                   use_cache=True).past_key_values

    def extend(self, cache: Any, tokens: Int[Tensor, "batch new"], attention_mask: Int[Tensor, "batch total"],
               position_ids: Int[Tensor, "batch new"]) -> Float[Tensor, "batch new d_model"]:
        """Final-norm residual stream of ``tokens`` read after a :meth:`prefill` cache (which it extends)."""
        return self.hf_model.model(input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids,
                                   past_key_values=cache, use_cache=True).last_hidden_state.to(self.cfg.device)

    def to_tokens(self, text: str | list[str]) -> Int[Tensor, "batch pos"]:
        encoded = self.tokenizer(text, return_tensors="pt", padding=True)
        return encoded["input_ids"].to(self.cfg.device)

    def hidden_states(self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"] | None = None
                      ) -> Float[Tensor, "batch pos d_model"]:
        """Final-norm residual stream (what the unembedding reads), with active hooks applied."""
        # Under a device map the inner model leaves its output on the last block's device; callers index it with
        # tensors on the input device.
        hidden = self.hf_model.model(input_ids=tokens, attention_mask=attention_mask, use_cache=False)
        return hidden.last_hidden_state.to(self.cfg.device)

    def final_norm(self, residual: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows d_model"]:
        """The decoder's final norm (Gemma: RMSNorm with a (1 + w) scale)."""
        return self.hf_model.model.norm(residual)

    def unembed(self, hidden: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows d_vocab"]:
        """Logits of final-norm residual vectors (with the model's logit soft-capping, if it has one)."""
        logits = self.hf_model.lm_head(hidden)
        cap = getattr(self.hf_model.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap
