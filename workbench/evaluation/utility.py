"""What steering costs, measured on prompt-conditioned contexts: a question followed by a human answer.

:func:`answer_costs` gives, per context, the NLL of the answer under the edited model and the KL from the unedited
model's next-token distributions to the edited model's over the answer positions, with position rules told where
each prompt ends (so "prompt-final + k" edits the prompt's last position and the answer's first k). Logits are
computed only at answer positions and chunked, so the 262k-entry unembedding never materialises for a whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import BatchEncoding

from workbench.backends import Model, device_of, position_logits
from workbench.interventions import Hook, prompt_ends


def _encode(model: Model, texts: Sequence[str], max_length: int) -> BatchEncoding:
    device = next(model.parameters()).device
    return model.tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right", truncation=True,
                           max_length=max_length).to(device)


def final_logits(model: Model, texts: Sequence[str], *, hooks: Sequence[Hook] = (), batch_size: int = 8,
                 max_length: int = 256) -> Float[Tensor, "text vocab"]:
    """Next-token logits after the last token of each text (each whole text is the prompt), with ``hooks``
    active."""
    rows = []
    with model.hooks(fwd_hooks=list(hooks)), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = _encode(model, texts[start:start + batch_size], max_length)
            last = encoded["attention_mask"].sum(-1) - 1
            index = torch.arange(len(last), device=last.device)
            final = torch.zeros_like(encoded["attention_mask"], dtype=torch.bool)
            final[index, last] = True
            with prompt_ends(last):
                rows.append(position_logits(model, encoded["input_ids"], encoded["attention_mask"], final,
                                            lambda logits, _: logits.float().cpu()))
    return torch.cat(rows)


def kl_divergence(base_logits: Float[Tensor, "n vocab"], edited_logits: Float[Tensor, "n vocab"]
                  ) -> Float[Tensor, " n"]:
    """``KL(p_base || p_edited)`` per row, in nats (logits or log-probabilities: both are normalised here)."""
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
    return answer_costs(model, prompts, continuations, hooks=hooks, skip_tokens=skip_tokens, batch_size=batch_size,
                        max_length=max_length).nll


@dataclass(frozen=True)
class AnswerCosts:
    """Per context: the edited model's answer NLL and, when a reference was asked for, the KL to it."""

    nll: Float[Tensor, " context"]
    """Mean NLL per answer token from the ``skip_tokens + 1``-th on (NaN where no token is scored)."""
    kl: Float[Tensor, " context"] | None
    """Mean over answer positions of ``KL(p_reference || p_edited)`` in nats (None without reference prompts)."""
    log_probs: list[Tensor] | None = None
    """With ``keep_log_probs``: the edited model's log-probabilities at the answer positions (positions x vocabulary),
    one tensor per batch (pass them as another call's ``reference_log_probs`` to measure KL to this model without
    recomputing it)."""


@dataclass(frozen=True)
class _Batch:
    tokens: Int[Tensor, "batch pos"]
    mask: Int[Tensor, "batch pos"]
    answer: Bool[Tensor, "batch pos"]
    """Positions that predict an answer token (position j predicts token j + 1)."""
    prompt_ends: Int[Tensor, " batch"]
    targets: Int[Tensor, " answer_tokens"]


def _batch(rows: Sequence[tuple[list[int], int]], pad: int) -> _Batch:
    width = max(len(ids) for ids, _ in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    answer = torch.zeros((len(rows), width), dtype=torch.bool)
    for row, (ids, prompt_length) in enumerate(rows):
        tokens[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
        answer[row, prompt_length - 1:len(ids) - 1] = True
    return _Batch(tokens, mask, answer, torch.tensor([prompt_length - 1 for _, prompt_length in rows]),
                  tokens[:, 1:][answer[:, :-1]])


def _rows(model: Model, prompts: Sequence[str], answers: Sequence[str], max_length: int
          ) -> list[tuple[list[int], int]]:
    """Token ids (BOS + prompt + answer, truncated to ``max_length``) and prompt length of each context."""
    tokenizer = model.tokenizer
    rows = []
    for prompt, answer in zip(prompts, answers, strict=True):
        prompt_ids = tokenizer(prompt)["input_ids"]
        rows.append(((prompt_ids + tokenizer(answer, add_special_tokens=False)["input_ids"])[:max_length],
                     len(prompt_ids)))
    return rows


def normalised_log_probs(logits: Float[Tensor, "row vocab"]) -> Float[Tensor, "row vocab"]:
    """``log_softmax`` in float32, normalised twice: over a 262k vocabulary one pass leaves probabilities summing
    to 1 +- 1e-4, which :func:`position_costs` would carry into the KL as that much times the logits' size."""
    log_probs = logits.float().log_softmax(-1)
    return log_probs - log_probs.logsumexp(-1, keepdim=True)


def position_costs(logits: Float[Tensor, "row vocab"], targets: Int[Tensor, " row"],
                   reference_log_probs: Float[Tensor, "row vocab"] | None = None
                   ) -> Float[Tensor, "row cost"]:
    """Per row: the NLL of its target token and, with reference log-probabilities (from
    :func:`normalised_log_probs`), ``KL(p_reference || softmax(logits))``.

    The KL is ``sum p_ref (log p_ref - logits + logsumexp(logits))``: one log-sum-exp and one dot product per row
    instead of two normalisations of the edited logits, and within ~1e-6 nats of the float64 value.
    """
    logits = logits.float()
    log_normaliser = logits.logsumexp(-1, keepdim=True)
    token_nll = (log_normaliser - logits.gather(-1, targets[:, None]))[:, 0]
    if reference_log_probs is None:
        return token_nll[:, None]
    kl = torch.linalg.vecdot(reference_log_probs.exp(), reference_log_probs - (logits - log_normaliser))
    return torch.stack([token_nll, kl], -1)


def _chunk_costs(targets: Int[Tensor, " row"], reference_log_probs: Float[Tensor, "row vocab"] | None,
                 kept: list[Tensor] | None = None) -> Callable[[Tensor, slice], Tensor]:
    """:func:`position_costs` of each chunk of selected positions (their normalised log-probabilities appended to
    ``kept``, chunk by chunk, when given)."""
    def costs(logits: Tensor, rows: slice) -> Tensor:
        if kept is not None:
            kept.append(normalised_log_probs(logits).cpu())
        return position_costs(logits, targets[rows],
                              reference_log_probs[rows] if reference_log_probs is not None else None)

    return costs


def answer_costs(model: Model, prompts: Sequence[str], answers: Sequence[str], *, hooks: Sequence[Hook] = (),
                 reference_prompts: Sequence[str] | None = None,
                 reference_log_probs: Sequence[Tensor] | None = None, keep_log_probs: bool = False,
                 skip_tokens: int = 0, max_answer_tokens: int | None = None, batch_size: int = 8,
                 max_length: int = 192) -> AnswerCosts:
    """What ``hooks`` do to each ``answer`` after its ``prompt``: its NLL (from the ``skip_tokens + 1``-th answer
    token on) and, with ``reference_prompts``, the KL from the unhooked model given those prompts (e.g. the
    unrewritten ones; the same prompts for a pure hook edit) at every answer position.

    ``reference_log_probs`` (the ``log_probs`` an unhooked call with ``keep_log_probs`` returned for the reference
    prompts, the same answers and batch size) replaces the reference forward passes; a sweep that evaluates many
    edits against one unsteered model computes them once.
    Answers are tokenized as given (put a leading space where the prompt ends with "A:") and cut to
    ``max_answer_tokens``.
    """
    if len(prompts) != len(answers) or (reference_prompts is not None and len(reference_prompts) != len(answers)):
        raise ValueError(f"{len(prompts)} prompts, {len(answers)} answers and "
                         f"{len(reference_prompts or answers)} reference prompts: pass one of each per context")
    if max_answer_tokens is not None:
        tokenizer = model.tokenizer
        answers = [tokenizer.decode(tokenizer(answer, add_special_tokens=False)["input_ids"][:max_answer_tokens])
                   for answer in answers]
    rows = _rows(model, prompts, answers, max_length)
    reference_rows = _rows(model, reference_prompts, answers, max_length) if reference_prompts is not None else None
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    device = device_of(model)
    batches = range(0, len(rows), batch_size)
    if reference_log_probs is not None and (reference_rows is None or len(reference_log_probs) != len(batches)):
        raise ValueError("reference_log_probs need reference_prompts and one tensor per batch of "
                         f"{batch_size} contexts ({len(batches)}), got {len(reference_log_probs)}")
    nll: list[float] = []
    kl: list[float] = []
    kept: list[Tensor] = []
    for number, start in enumerate(batches):
        batch = _batch(rows[start:start + batch_size], pad)
        counts = batch.answer.sum(-1).tolist()
        reference = None
        if reference_rows is not None:
            reference_batch = _batch(reference_rows[start:start + batch_size], pad)
            if reference_batch.answer.sum(-1).tolist() != counts:
                raise ValueError("reference prompts leave other answer lengths (a context was cut at max_length)")
            reference = (reference_log_probs[number] if reference_log_probs is not None
                         else _log_probs(model, reference_batch))
            if len(reference) != sum(counts):
                raise ValueError(f"reference_log_probs batch {number} has {len(reference)} positions, the answers "
                                 f"{sum(counts)}: compute them for these answers with batch_size={batch_size}")
        chunks: list[Tensor] | None = [] if keep_log_probs else None
        with model.hooks(fwd_hooks=list(hooks)), torch.inference_mode(), prompt_ends(batch.prompt_ends):
            values = position_logits(model, batch.tokens, batch.mask, batch.answer,
                                     _chunk_costs(batch.targets.to(device), reference, chunks)).cpu()
        values = values.reshape(-1, 1 if reference is None else 2)  # a batch of empty answers gives no rows
        if chunks is not None:
            kept.append(torch.cat(chunks) if chunks else torch.empty(0, model.cfg.d_vocab))
        for part in values.split(counts):
            scored = part[skip_tokens:, 0]
            nll.append(float(scored.mean()) if len(scored) else float("nan"))
            kl.append(float(part[:, 1].mean()) if part.shape[1] > 1 and len(part) else float("nan"))
    return AnswerCosts(torch.tensor(nll), torch.tensor(kl) if reference_rows is not None else None,
                       kept if keep_log_probs else None)


def _log_probs(model: Model, batch: _Batch) -> Float[Tensor, "answer_position vocab"]:
    """The unhooked model's log-probabilities at the answer positions of ``batch``."""
    with torch.inference_mode(), prompt_ends(batch.prompt_ends):
        return position_logits(model, batch.tokens, batch.mask, batch.answer,
                               lambda logits, _: normalised_log_probs(logits)).reshape(-1, model.cfg.d_vocab)
