"""What steering costs: KL on committed contexts, in-language NLL change, English perplexity change.

Logits are computed only where needed: at the final position of committed contexts, and position-chunked for
NLL so the 262k-entry unembedding never materialises for a whole batch at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import BatchEncoding

from workbench.hf_backend import HFHookedModel
from workbench.interventions import Hook, prompt_ends

_UNEMBED_CHUNK = 256  # rows per unembedding chunk: 256 x 262k floats = 268 MB


def _encode(model: Any, texts: Sequence[str], max_length: int) -> BatchEncoding:
    device = next(model.parameters()).device
    return model.tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right", truncation=True,
                           max_length=max_length).to(device)


def final_logits(model: Any, texts: Sequence[str], *, hooks: Sequence[Hook] = (),
                 prompt_lengths: Sequence[int] | None = None, batch_size: int = 8, max_length: int = 256
                 ) -> Float[Tensor, "text vocab"]:
    """Next-token logits after the last token of each text, with ``hooks`` active.

    ``prompt_lengths`` (tokens, BOS included) says where each text's prompt ends, for position rules such as
    "prompt-final + k generated steps" (a committed context is a prompt plus tokens it would have generated);
    without it each whole text is the prompt.
    """
    rows = []
    with model.hooks(fwd_hooks=list(hooks)), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = _encode(model, texts[start:start + batch_size], max_length)
            last = encoded["attention_mask"].sum(-1) - 1
            index = torch.arange(len(last), device=last.device)
            ends = last if prompt_lengths is None else torch.tensor(prompt_lengths[start:start + batch_size]) - 1
            with prompt_ends(ends):
                if isinstance(model, HFHookedModel):
                    hidden = model.hidden_states(encoded["input_ids"], encoded["attention_mask"])
                    rows.append(model.unembed(hidden[index, last]).float().cpu())
                else:
                    logits = model(encoded["input_ids"], attention_mask=encoded["attention_mask"])
                    rows.append(logits[index, last].float().cpu())
    return torch.cat(rows)


def kl_divergence(base_logits: Float[Tensor, "n vocab"], edited_logits: Float[Tensor, "n vocab"]
                  ) -> Float[Tensor, " n"]:
    """``KL(p_base || p_edited)`` per row, in nats."""
    base = base_logits.log_softmax(-1)
    return (base.exp() * (base - edited_logits.log_softmax(-1))).sum(-1)


def _token_nll(logits: Float[Tensor, "rows vocab"], targets: Int[Tensor, " rows"]) -> Float[Tensor, " rows"]:
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")


def sequence_nll(model: Any, texts: Sequence[str], *, hooks: Sequence[Hook] = (), batch_size: int = 8,
                 max_length: int = 96) -> Float[Tensor, " text"]:
    """Mean per-token negative log-likelihood of each text (BOS-conditioned), with ``hooks`` active."""
    if not texts:
        raise ValueError("sequence_nll needs at least one text")
    per_text = []
    with model.hooks(fwd_hooks=list(hooks)), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = _encode(model, texts[start:start + batch_size], max_length)
            tokens, mask = encoded["input_ids"], encoded["attention_mask"]
            predicted = mask[:, 1:].bool()
            if isinstance(model, HFHookedModel):
                with prompt_ends(mask.sum(-1) - 1):
                    hidden = model.hidden_states(tokens, mask)[:, :-1][predicted]
                targets = tokens[:, 1:][predicted]
                nll = torch.cat([_token_nll(model.unembed(h), t) for h, t in
                                 zip(hidden.split(_UNEMBED_CHUNK), targets.split(_UNEMBED_CHUNK), strict=True)])
            else:
                with prompt_ends(mask.sum(-1) - 1):
                    logits = model(tokens, attention_mask=mask)[:, :-1][predicted]
                nll = _token_nll(logits, tokens[:, 1:][predicted])
            counts = predicted.sum(-1).tolist()
            per_text += [chunk.mean() for chunk in nll.cpu().split(counts)]
    return torch.stack(per_text)
