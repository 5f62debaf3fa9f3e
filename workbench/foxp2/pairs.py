"""FOXP2 stage II data: aligned English/target representations per layer, one row per pair (or per pair and
response position), from the shipped corpus's discovery split.

Two representations (``PairDataConfig.positions``):

* ``response`` (the default, as the revised reference code does): the residual at the first ``response_tokens``
  answer positions of ``Q: <English question>\\nA: <answer>`` with the help paragraph's target translation vs its
  English original as the answer. Both sides share the prompt, so the rows differ only by the answer's language and
  wording; row ``(pair, k)`` of one side is aligned with row ``(pair, k)`` of the other.
* ``pooled`` (the paper-literal option): each parallel sentence's mean residual over its tokens. Its difference
  matrix is dominated by the mean offset at every layer, so its spectra do not separate from the shuffled-pairing
  null (reported beside the default).

The rows are one :data:`workbench.store.PAIR_ROWS` entry per (model, target, source, config): stage II computes
them, stage I's feature-space spectra read them again at every window it localises.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from jaxtyping import Float
from torch import Tensor

from workbench import corpus
from workbench.artifacts import load_tensors, save_tensors
from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.models import model_key
from workbench.prompting import prompt_format
from workbench.readouts import activations_at, pooled_means
from workbench.sites import Site, resolve_site
from workbench.store import PAIR_ROWS, Store

POSITIONS: tuple[str, ...] = ("response", "pooled")
"""How a pair is represented: its first response positions, or its mean-pooled sentences."""


@dataclass(frozen=True)
class PairDataConfig:
    """Which parallel pairs the difference matrices are built from, and how each is represented."""

    n_pairs: int = 256
    """Parallel English/target pairs (fewer if the split has fewer)."""
    split: str = "discovery"
    """Corpus split (stage II never sees dev or eval text)."""
    kind: str = "resid_post"
    """Site kind; every layer is read in one pass."""
    positions: str = "response"
    """``response``: the first ``response_tokens`` answer positions of a shared English question answered in each
    language; ``pooled``: mean-pooled parallel sentences (the paper-literal option)."""
    response_tokens: int = 3
    """Answer positions read per pair with ``positions="response"`` (pairs with a shorter answer are skipped)."""
    max_length: int = 96
    """Tokens per sequence at most (BOS included)."""
    batch_size: int = 16
    """Sequences per forward pass."""

    def __post_init__(self) -> None:
        if self.split not in corpus.SPLITS:
            raise WorkbenchError(f"unknown split {self.split!r}; use one of {', '.join(corpus.SPLITS)}")
        if self.n_pairs < 2:
            raise WorkbenchError(f"n_pairs must be >= 2, got {self.n_pairs}")
        if self.positions not in POSITIONS:
            raise WorkbenchError(f"unknown positions {self.positions!r}; use one of {', '.join(POSITIONS)}")
        if self.response_tokens < 1:
            raise WorkbenchError(f"response_tokens must be >= 1, got {self.response_tokens}")


def _hook_names(model: Model, kind: str) -> list[str]:
    return [resolve_site(model, Site(layer, kind)).hook_name for layer in range(model.cfg.n_layers)]


def pooled_sentences(model: Model, texts: list[str], config: PairDataConfig, *, progress: bool = True,
                     description: str = "pool") -> Float[Tensor, "layer text d"]:
    """Each text's mean activation over its tokens (BOS and padding excluded) at every layer of ``config.kind``."""
    return pooled_means(model, texts, _hook_names(model, config.kind), batch_size=config.batch_size,
                        max_length=config.max_length, progress=progress, description=description)


def response_sequences(model: Model, questions: list[str], answers: dict[str, list[str]], n_tokens: int,
                       max_length: int) -> tuple[dict[str, list[list[int]]], list[int]]:
    """Token ids of the prompt of ``question`` (in the model's format) then ``answer`` per language, and the prompt
    length of each pair (the index of its first answer token); pairs where any language's answer has fewer than
    ``n_tokens`` tokens within ``max_length`` are dropped from every language."""
    tokenizer = model.tokenizer
    fmt = prompt_format(model)
    prompts = [tokenizer(fmt.prompt(question))["input_ids"] for question in questions]
    ids = {code: [(prompt + tokenizer(fmt.answer_prefix + answer, add_special_tokens=False)["input_ids"])[:max_length]
                  for prompt, answer in zip(prompts, texts, strict=True)] for code, texts in answers.items()}
    kept = [i for i, prompt in enumerate(prompts) if all(len(ids[code][i]) >= len(prompt) + n_tokens for code in ids)]
    return {code: [rows[i] for i in kept] for code, rows in ids.items()}, [len(prompts[i]) for i in kept]


def response_representations(model: Model, target: str, source: str = "en",
                             config: PairDataConfig = PairDataConfig(), *, progress: bool = True
                             ) -> dict[str, Float[Tensor, "layer row d"]]:
    """Per language, every layer's activation at the first ``config.response_tokens`` answer positions of each
    shared-question pair (rows: pair-major, then position)."""
    by_id = {code: {pair.id: pair for pair in corpus.qa_pairs(code, split=config.split)} for code in (source, target)}
    shared = [pair_id for pair_id in by_id[target] if pair_id in by_id[source]][:config.n_pairs]
    if len(shared) < 2:
        raise WorkbenchError(f"fewer than 2 {source}/{target} question/answer pairs in the {config.split} split")
    sequences, starts = response_sequences(
        model, [by_id[source][pair_id].question for pair_id in shared],
        {code: [by_id[code][pair_id].answer for pair_id in shared] for code in (source, target)},
        config.response_tokens, config.max_length)
    if len(starts) < 2:
        raise WorkbenchError(f"fewer than 2 {source}/{target} pairs have {config.response_tokens} answer tokens "
                             f"within max_length={config.max_length}")
    positions = [list(range(start, start + config.response_tokens)) for start in starts]
    names = _hook_names(model, config.kind)
    return {code: activations_at(model, sequences[code], positions, names, batch_size=config.batch_size,
                                 progress=progress, description=f"response {config.kind} [{code}]")
            for code in (source, target)}


def pair_representations(model: Model, target: str, source: str = "en", config: PairDataConfig = PairDataConfig(),
                         *, use_cache: bool = True, progress: bool = True) -> dict[str, Float[Tensor, "layer row d"]]:
    """Aligned ``source``/``target`` rows at every layer, keyed by language (see the module docstring); computed
    once per model, languages and config, then read from the store (``use_cache=False`` recomputes them)."""
    entry = Store().entry(PAIR_ROWS, {"model": model_key(model), "target": target, "source": source,
                                      "data": asdict(config)}, scope=model_key(model), label=f"{target}-{source}")
    if use_cache and entry.ready():
        return load_tensors(entry / "rows.safetensors")
    if config.positions == "response":
        rows = response_representations(model, target, source, config, progress=progress)
    else:
        rows = _pooled_representations(model, target, source, config, progress=progress)
    entry.clear()
    save_tensors(rows, entry.prepare() / "rows.safetensors")
    entry.commit()
    return rows


def _pooled_representations(model: Model, target: str, source: str, config: PairDataConfig, *, progress: bool
                            ) -> dict[str, Float[Tensor, "layer row d"]]:
    rows = corpus.parallel([source, target], split=config.split, n=config.n_pairs)
    if len(rows) < 2:
        raise WorkbenchError(f"fewer than 2 parallel {source}/{target} pairs in the {config.split} split")
    return {code: pooled_sentences(model, [row.text[code] for row in rows], config, progress=progress,
                                   description=f"pool {config.kind} [{code}]") for code in (source, target)}
