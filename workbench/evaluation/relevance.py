"""Semantic relevance, offline and language-agnostic: does an output retrieve its own prompt?

Each text is represented by the evaluated model's (unsteered) mean-pooled residual stream at a layer two thirds
deep, mean-centred within its set (prompts, outputs). Output i is relevant when its most cosine-similar prompt
among the batch is prompt i; chance is 1/N. A pluggable judge (e.g. :func:`llm_judge` with a bigger model) can
replace it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from workbench.activations import pooled_means
from workbench.backends import Model
from workbench.evaluation.utility import final_logits

Judge = Callable[[Sequence[str], Sequence[str]], list[bool]]


def pooled_representations(model: Model, texts: Sequence[str], layer: int, *, batch_size: int = 8,
                           max_length: int = 128) -> Float[Tensor, "text d_model"]:
    """Mean over non-BOS, non-padding tokens of ``blocks.{layer}.hook_resid_post``; empty texts give zeros."""
    texts = [text if text.strip() else " " for text in texts]
    return pooled_means(model, texts, [f"blocks.{layer}.hook_resid_post"], batch_size=batch_size,
                        max_length=max_length, progress=False)[0]


def retrieval_matches(prompt_vectors: Float[Tensor, "n d"], output_vectors: Float[Tensor, "n d"]
                      ) -> Bool[Tensor, " n"]:
    """Whether each output's nearest prompt (cosine, after centring each set on its own mean) is its own."""
    prompts = torch.nn.functional.normalize(prompt_vectors - prompt_vectors.mean(0), dim=-1)
    outputs = torch.nn.functional.normalize(output_vectors - output_vectors.mean(0), dim=-1)
    return (outputs @ prompts.T).argmax(-1) == torch.arange(len(prompts))


def retrieval_relevance(model: Model, prompts: Sequence[str], outputs: Sequence[str], *, layer: int | None = None
                        ) -> Bool[Tensor, " n"]:
    """Per-output relevance by prompt retrieval; empty outputs are never relevant.

    Default layer: two thirds of the depth (12 of 18 on Gemma 3 270M, where 100 parallel eval rows retrieve
    their English source at top-1 0.90 from Spanish and 0.63 from Hindi, vs 0.72/0.47 at layer 4; chance 0.01).
    """
    layer = (2 * model.cfg.n_layers) // 3 if layer is None else layer
    matches = retrieval_matches(pooled_representations(model, prompts, layer),
                                pooled_representations(model, outputs, layer))
    return matches & torch.tensor([bool(text.strip()) for text in outputs])


def llm_judge(judge_model: Model, rubric: str = "Does the answer address the question, in any language?") -> Judge:
    """A relevance judge from any loaded model: relevant when it prefers " Yes" over " No" after the rubric."""
    tokenizer = judge_model.tokenizer
    yes, no = (tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in (" Yes", " No"))

    def judge(prompts: Sequence[str], outputs: Sequence[str]) -> list[bool]:
        queries = [f"{rubric}\nQuestion: {p.strip()}\nAnswer: {o.strip()}\nVerdict (Yes or No):"
                   for p, o in zip(prompts, outputs, strict=True)]
        logits = final_logits(judge_model, queries)
        return [bool(row[yes] > row[no]) and bool(o.strip()) for row, o in zip(logits, outputs, strict=True)]

    return judge
