"""What steering costs: KL on committed contexts, in-language NLL change, English perplexity change.

Logits are computed only where needed: at the final position of committed contexts, and position-chunked for
NLL so the 262k-entry unembedding never materialises for a whole batch at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformers import BatchEncoding

from workbench.backends import Model, device_of, position_logits
from workbench.interventions import Hook, prompt_ends


def _encode(model: Model, texts: Sequence[str], max_length: int) -> BatchEncoding:
    device = next(model.parameters()).device
    return model.tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right", truncation=True,
                           max_length=max_length).to(device)


def final_logits(model: Model, texts: Sequence[str], *, hooks: Sequence[Hook] = (),
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
            final = torch.zeros_like(encoded["attention_mask"], dtype=torch.bool)
            final[index, last] = True
            with prompt_ends(ends):
                rows.append(position_logits(model, encoded["input_ids"], encoded["attention_mask"], final,
                                            lambda logits, _: logits.float().cpu()))
    return torch.cat(rows)


def kl_divergence(base_logits: Float[Tensor, "n vocab"], edited_logits: Float[Tensor, "n vocab"]
                  ) -> Float[Tensor, " n"]:
    """``KL(p_base || p_edited)`` per row, in nats."""
    base = base_logits.log_softmax(-1)
    return (base.exp() * (base - edited_logits.log_softmax(-1))).sum(-1)


def _per_token_nll(targets: Int[Tensor, " rows"]) -> Callable[[Tensor, slice], Tensor]:
    return lambda logits, rows: F.cross_entropy(logits.float(), targets[rows], reduction="none")


def sequence_nll(model: Model, texts: Sequence[str], *, hooks: Sequence[Hook] = (), batch_size: int = 8,
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
            targets = tokens[:, 1:][predicted]
            with prompt_ends(mask.sum(-1) - 1):
                nll = position_logits(model, tokens, mask, F.pad(predicted, (0, 1)),
                                      _per_token_nll(targets))
            counts = predicted.sum(-1).tolist()
            per_text += [chunk.mean() for chunk in nll.cpu().split(counts)]
    return torch.stack(per_text)


def continuation_nll(model: Model, prompts: Sequence[str], continuations: Sequence[str], *,
                     hooks: Sequence[Hook] = (), skip_tokens: int = 0, batch_size: int = 8, max_length: int = 192
                     ) -> Float[Tensor, " item"]:
    """Mean NLL per token of each continuation after its prompt, from its ``skip_tokens + 1``-th token on, with
    ``hooks`` active (position rules are told where each prompt ends). Items with no scored token give NaN."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    tokenizer = model.tokenizer
    rows = []
    for prompt, continuation in zip(prompts, continuations, strict=True):
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = (prompt_ids + tokenizer(continuation, add_special_tokens=False)["input_ids"])[:max_length]
        rows.append((ids, len(prompt_ids)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    per_item: list[float] = []
    with model.hooks(fwd_hooks=list(hooks)), torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            scored = torch.zeros((len(chunk), width), dtype=torch.bool)  # position j predicts token j + 1
            for row, (ids, prompt_length) in enumerate(chunk):
                tokens[row, :len(ids)] = torch.tensor(ids)
                mask[row, :len(ids)] = 1
                scored[row, prompt_length + skip_tokens - 1:len(ids) - 1] = True
            targets = tokens[:, 1:][scored[:, :-1]].to(device_of(model))
            with prompt_ends(torch.tensor([prompt_length - 1 for _, prompt_length in chunk])):
                nll = position_logits(model, tokens, mask, scored, _per_token_nll(targets)).cpu()
            per_item += [float(part.mean()) if len(part) else float("nan")
                         for part in nll.split(scored.sum(-1).tolist())]
    return torch.tensor(per_item)
