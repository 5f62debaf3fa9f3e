"""One evaluation for every steering method: ``evaluate(model, prompts, target, hooks=...) -> SteeringMetrics``.

Any hook set plugs in unchanged. The unsteered reference runs (generations, and the answer NLL on the utility
contexts: English questions followed by a human answer from the shipped corpus) are a :class:`Baseline`, computed
once per (model, prompts, target) and reused across methods. Rates carry 95% intervals: Wilson for LID success and
DEFAULT, a seeded percentile bootstrap over items (answers, or utility contexts) for relevance, coherence, the other
means and the steering score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workbench import corpus
from workbench.artifacts import atomic_write_json, nan_for_null
from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.evaluation.coherence import CoherenceConfig, CoherenceItem, score_coherence
from workbench.evaluation.encoder import EncoderRelevance
from workbench.evaluation.lid import cut_at_next_turn, identify_language, lid_candidates
from workbench.evaluation.mass import delta_mass, language_mass, leakage
from workbench.evaluation.relevance import (
    ConditionalLikelihoodRelevance,
    Judge,
    JudgeRelevance,
    RelevanceScorer,
    RetrievalRelevance,
    retrieval_relevance,
    scorer_description,
)
from workbench.evaluation.scores import (
    bootstrap_interval,
    harmonic_mean,
    steering_score_from_items,
    steering_score_v2_from_items,
    wilson_interval,
)
from workbench.evaluation.token_sets import DEFAULT_LANGUAGES, TokenSets, candidate_languages, token_sets_for
from workbench.evaluation.utility import AnswerCosts, answer_costs
from workbench.generation import Generation, generate_recording
from workbench.interventions import Hook
from workbench.languages import get_language
from workbench.models import model_metadata
from workbench.prompting import qa_context


class EvaluationError(WorkbenchError):
    """Evaluation inputs that do not fit together (no prompts, a baseline of other prompts)."""


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings shared by every method's evaluation."""

    max_new_tokens: int = 32
    """Greedy tokens generated per prompt."""
    mass_steps: int = 3
    """T: generated steps averaged in the early-step mass dM."""
    n_utility_contexts: int = 64
    """Question/answer contexts (:func:`workbench.corpus.qa_pairs`, fewer where the split has fewer) per language:
    the KL and NLL change are measured on target-language answers, the perplexity change on English ones."""
    utility_answer_tokens: int = 32
    """Answer tokens of each utility context."""
    nll_skip_tokens: int = 3
    """First answer tokens left out of the NLL change (they carry the switch of language itself)."""
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    """Token-set languages: LID candidates and the languages leakage is measured on (target and source added)."""
    relevance: str | None = "e5-linear"
    """Relevance scorer: ``e5-linear`` (default), ``e5-percentile``, ``retrieval`` or ``conditional-likelihood``;
    None skips relevance (then it and the steering score are NaN)."""
    relevance_layer: int | None = None
    """Layer of the retrieval representations (default: two thirds of the depth)."""
    lid_first_tokens: int = 8
    """LID is also reported on this many first tokens of each answer."""
    coherence: CoherenceConfig | None = CoherenceConfig()
    """The coherence rule; None skips coherence (then it is NaN and the score counts every answer as coherent)."""
    utility_split: str = "eval"
    """Corpus split the utility contexts come from (the prompts' split)."""
    bootstrap_resamples: int = 1000
    """Bootstrap resamples for mean-valued metrics and the steering score."""
    seed: int = 0
    """Bootstrap seed."""
    batch_size: int = 48
    """Prompts per generation batch (at most; and contexts per utility batch). Larger batches generate faster
    (each step reads the 262k-row unembedding once per batch); greedy outputs do not depend on it."""

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "mass_steps", "n_utility_contexts", "utility_answer_tokens",
                     "bootstrap_resamples", "batch_size"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or getattr(
                    self, name) < 1:
                raise EvaluationError(f"EvaluationConfig.{name} must be a positive integer, got "
                                      f"{getattr(self, name)!r}")
        if self.mass_steps > self.max_new_tokens:
            raise EvaluationError(f"max_new_tokens={self.max_new_tokens} is fewer than the {self.mass_steps} steps "
                                  "the language-mass change dM averages (mass_steps): generate at least "
                                  f"{self.mass_steps} tokens or lower mass_steps")

    def candidate_languages(self, target: str, source: str) -> list[str]:
        return candidate_languages(target, source, self.languages)

    def relevance_scorer(self, model: Model | None) -> RelevanceScorer | None:
        """The scorer named by :attr:`relevance` (None when relevance is skipped)."""
        if self.relevance is None:
            return None
        scorers = {"e5-linear": lambda: EncoderRelevance("linear"), "e5-percentile": lambda: EncoderRelevance(
            "percentile"), "retrieval": lambda: RetrievalRelevance(model, self.relevance_layer),
                   "conditional-likelihood": lambda: ConditionalLikelihoodRelevance(model)}
        if self.relevance not in scorers:
            raise EvaluationError(f"unknown relevance scorer {self.relevance!r}; choose one of {', '.join(scorers)}")
        return scorers[self.relevance]()


@dataclass(frozen=True)
class UtilityContexts:
    """Question/answer contexts the utility costs are measured on (prompts in the model's prompt format, answers
    with the separator it expects)."""

    target_prompts: list[str]
    target_answers: list[str]
    source_prompts: list[str]
    source_answers: list[str]

    @classmethod
    def from_corpus(cls, target: str, source: str, config: EvaluationConfig, model: Model | None = None
                    ) -> UtilityContexts:
        """The first ``n_utility_contexts`` pairs of ``utility_split`` in each language (all, where fewer exist),
        in ``model``'s prompt format (``Q: ...\nA:`` without a model)."""
        columns = []
        for lang in (target, source):
            pairs = corpus.qa_pairs(lang, split=config.utility_split)[:config.n_utility_contexts]
            if not pairs:
                raise EvaluationError(
                    f"the shipped corpus has no {lang!r} question/answer contexts in split {config.utility_split!r} "
                    f"(no translated help text): utility costs need them; targets with them: "
                    f"{', '.join(_languages_with_contexts(config.utility_split))}")
            columns += [list(column) for column in
                        zip(*(qa_context(model, pair.question, pair.answer) for pair in pairs), strict=True)]
        return cls(*columns)


def _languages_with_contexts(split: str) -> list[str]:
    return [row["code"] for row in corpus.stats()["languages"] if row["qa_pairs_by_split"].get(split)]


@dataclass
class Baseline:
    """Unsteered runs that steered runs are compared with."""

    target: str
    source: str
    prompts: list[str]
    generation: Generation
    contexts: UtilityContexts
    target_nll: Tensor
    """Unsteered NLL of each target-language utility answer (after the skipped tokens)."""
    english_nll: Tensor
    """Unsteered NLL of each English utility answer."""
    target_log_probs: list[Tensor] | None = None
    """Unsteered log-probabilities at the target answers' positions (per utility batch), the KL reference of every
    steered run; None when they would exceed :data:`REFERENCE_CACHE_BYTES` (then each run recomputes them)."""


@dataclass
class SteeringMetrics:
    """The evaluation keys, each rate with a 95% interval, plus per-prompt records."""

    target: str
    source: str
    n_prompts: int
    lid_success: float
    """Share of answers (cut at the next "\\nQ:") identified as the target, close relatives among the candidates."""
    lid_success_ci: tuple[float, float]
    lid_success_first_tokens: float
    """The same on each answer's first ``lid_first_tokens`` tokens."""
    lid_success_first_tokens_ci: tuple[float, float]
    default_rate: float
    default_rate_ci: tuple[float, float]
    delta_mass: float
    delta_mass_ci: tuple[float, float]
    leakage_max: float
    leakage_mean: float
    kl: float
    """Mean over target-language utility contexts of the mean KL(unsteered || steered) over answer positions."""
    kl_ci: tuple[float, float]
    nll_delta: float
    """Mean change of the target-language answers' NLL per token (first ``nll_skip_tokens`` left out)."""
    nll_delta_ci: tuple[float, float]
    en_ppl_delta: float
    """Change of the English answers' perplexity (exp of the mean NLL)."""
    n_utility_contexts: int
    """Target-language contexts the KL and NLL change were measured on."""
    relevance: float
    """Mean per-answer relevance of the configured scorer (in [0, 1] for the encoder)."""
    relevance_ci: tuple[float, float]
    coherence: float
    """Share of coherent answers (the :class:`CoherenceConfig` rule)."""
    coherence_ci: tuple[float, float]
    repeated_ngram_share: float
    distinct_2: float
    output_nll: float
    """Mean NLL per token of the answers after their prompts under the unsteered model."""
    steering_score: float
    """``harmonic_mean(lid_success, mean(relevance_i * coherent_i))``."""
    steering_score_ci: tuple[float, float]
    retrieval_relevance: float
    """The first score's relevance: top-1 prompt retrieval among the batch (chance ``relevance_chance``)."""
    retrieval_relevance_ci: tuple[float, float]
    relevance_chance: float
    lid_success_v1: float
    """The first score's LID: whole output, no close relatives among the candidates."""
    steering_score_v1: float
    """The first score, ``harmonic_mean(lid_success_v1, retrieval_relevance)``, kept so older runs compare."""
    steering_score_v1_ci: tuple[float, float]
    records: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, with_records: bool = True) -> dict[str, Any]:
        payload = asdict(self)
        if not with_records:
            payload.pop("records")
        return payload

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @staticmethod
    def revive(payload: dict[str, Any]) -> dict[str, Any]:
        """A stored :meth:`to_dict` payload with the numeric fields JSON wrote as null (NaN) read back as NaN."""
        return nan_for_null(payload, NUMERIC_METRICS)


NUMERIC_METRICS: tuple[str, ...] = tuple(
    f.name for f in fields(SteeringMetrics) if f.type in ("float", "tuple[float, float]"))
"""The :class:`SteeringMetrics` fields that are numbers or intervals."""


def _generate(model: Model, prompts: Sequence[str], hooks: Sequence[Hook], token_sets: TokenSets,
              config: EvaluationConfig) -> Generation:
    """Generate, recording each language's mass in the first ``mass_steps`` next-token distributions."""
    return generate_recording(model, prompts, hooks=hooks, step_reducer=partial(language_mass, masks=token_sets.masks),
                              record_steps=config.mass_steps, max_new_tokens=config.max_new_tokens,
                              batch_size=config.batch_size)


def _answer_costs(model: Model, prompts: list[str], answers: list[str], config: EvaluationConfig, *,
                  hooks: Sequence[Hook] = (), rewriter: Callable[[str], str] | None = None, with_kl: bool = False,
                  reference_log_probs: list[Tensor] | None = None, keep_log_probs: bool = False) -> AnswerCosts:
    model_prompts = [rewriter(prompt) for prompt in prompts] if rewriter else prompts
    return answer_costs(model, model_prompts, answers, hooks=hooks, reference_prompts=prompts if with_kl else None,
                        reference_log_probs=reference_log_probs, keep_log_probs=keep_log_probs,
                        skip_tokens=config.nll_skip_tokens, max_answer_tokens=config.utility_answer_tokens,
                        batch_size=config.batch_size)


REFERENCE_CACHE_BYTES = 4 * 2**30
"""Largest unsteered KL reference (answer positions x vocabulary, float32) a :class:`Baseline` keeps in memory."""


def _keeps_reference(model: Model, contexts: UtilityContexts, config: EvaluationConfig) -> bool:
    positions = len(contexts.target_answers) * config.utility_answer_tokens
    return positions * model.cfg.d_vocab * 4 <= REFERENCE_CACHE_BYTES


def compute_baseline(model: Model, prompts: Sequence[str], target: str, *, source: str = "en",
                     token_sets: TokenSets | None = None, config: EvaluationConfig = EvaluationConfig()) -> Baseline:
    """The unsteered runs for ``prompts`` and ``target`` (reuse it across methods)."""
    for code in (target, source):
        get_language(code)  # unknown codes fail here, before any generation
    contexts = UtilityContexts.from_corpus(target, source, config, model)
    prompts = list(prompts)
    token_sets = token_sets or token_sets_for(model.tokenizer, config.candidate_languages(target, source))
    generation = _generate(model, prompts, (), token_sets, config)
    target_costs = _answer_costs(model, contexts.target_prompts, contexts.target_answers, config,
                                 keep_log_probs=_keeps_reference(model, contexts, config))
    return Baseline(
        target=target, source=source, prompts=prompts, generation=generation, contexts=contexts,
        target_nll=target_costs.nll, target_log_probs=target_costs.log_probs,
        english_nll=_answer_costs(model, contexts.source_prompts, contexts.source_answers, config).nll,
    )


def evaluate(model: Model, prompts: Sequence[str], target: str, *, hooks: Sequence[Hook] = (), source: str = "en",
             config: EvaluationConfig = EvaluationConfig(),
             baseline: Baseline | None = None, token_sets: TokenSets | None = None,
             judge: Judge | None = None, prompt_rewriter: Callable[[str], str] | None = None,
             relevance_references: Sequence[str | None] | None = None) -> SteeringMetrics:
    """Evaluate steering towards ``target`` by ``hooks`` (none: the unsteered model) on English ``prompts``.

    ``relevance_references`` per-prompt English reference answers that relevance also compares each answer with;
    ``judge`` replaces the configured relevance scorer (e.g. :func:`workbench.evaluation.relevance.llm_judge`).
    Answers are the outputs cut at the first ``"\\nQ:"`` (a hallucinated next question); LID, relevance and
    coherence read the answers. ``prompt_rewriter``
    turns each prompt into the one the model sees (prompting baselines): generation and the utility contexts use the
    rewritten prompt, relevance is judged against the original, and the KL, NLL and perplexity changes compare
    the answers after the rewritten question with the answers after the original one.

    The KL and NLL change are measured on target-language utility contexts (an English question from a help
    heading followed by the human translation of the paragraph after it), under the hooks' position rule, which is
    told where each question ends.
    """
    if not prompts:
        raise EvaluationError("evaluate needs at least one prompt")
    languages = config.candidate_languages(target, source)
    token_sets = token_sets or token_sets_for(model.tokenizer, languages)
    baseline = baseline or compute_baseline(model, prompts, target, source=source, token_sets=token_sets,
                                            config=config)
    if baseline.prompts != list(prompts) or (baseline.target, baseline.source) != (target, source):
        raise EvaluationError("baseline was computed for other prompts or languages; recompute it for these")

    model_prompts = [prompt_rewriter(prompt) for prompt in prompts] if prompt_rewriter else list(prompts)
    generation = _generate(model, model_prompts, hooks, token_sets, config)
    _require_finite(generation.step_values, "the next-token distributions of the first generated steps", "prompt")
    index = {lang: token_sets.languages.index(lang) for lang in languages}
    answers = [cut_at_next_turn(text) for text in generation.texts]
    n = len(prompts)
    candidates = lid_candidates(languages, target)
    predicted = identify_language(answers, candidates=candidates)
    first = identify_language(_first_tokens(model, answers, config.lid_first_tokens), candidates=candidates)
    controlled = np.array([lang == target for lang in predicted], dtype=float)
    controlled_first = np.array([lang == target for lang in first], dtype=float)
    delta = delta_mass(generation.step_values, index[target], index[source]).numpy()
    default = controlled * (delta > 0)
    others = [index[lang] for lang in languages if lang not in (target, source)]
    gains = leakage(generation.step_values, baseline.generation.step_values, others)
    scorer = JudgeRelevance(judge) if judge is not None else config.relevance_scorer(model)
    relevance = (np.array(scorer(list(prompts), answers, languages=predicted, references=relevance_references))
                 if scorer is not None else np.full(n, math.nan))
    items = score_coherence(model, model_prompts, answers, config.coherence) if config.coherence else []
    coherent = np.array([item.coherent for item in items], dtype=float) if items else np.ones(n)
    controlled_v1 = np.array([lang == target for lang in identify_language(generation.texts, candidates=languages)],
                             dtype=float)
    retrieved = retrieval_relevance(model, prompts, generation.texts, layer=config.relevance_layer).numpy()
    retrieved = retrieved.astype(float)
    contexts = baseline.contexts
    if hooks or prompt_rewriter:
        costs = _answer_costs(model, contexts.target_prompts, contexts.target_answers, config, hooks=hooks,
                              rewriter=prompt_rewriter, with_kl=True, reference_log_probs=baseline.target_log_probs)
        target_nll, kl = costs.nll, costs.kl.numpy()
        _require_finite(costs.kl, "the KL on the utility contexts", "context")
        english_nll = _answer_costs(model, contexts.source_prompts, contexts.source_answers, config, hooks=hooks,
                                    rewriter=prompt_rewriter).nll
    else:
        target_nll, english_nll = baseline.target_nll, baseline.english_nll
        kl = np.zeros(len(contexts.target_prompts))
    nll_change = (target_nll - baseline.target_nll).numpy()
    boot = {"n_resamples": config.bootstrap_resamples, "seed": config.seed}
    return SteeringMetrics(
        target=target, source=source, n_prompts=n,
        lid_success=float(controlled.mean()), lid_success_ci=wilson_interval(int(controlled.sum()), n),
        lid_success_first_tokens=float(controlled_first.mean()),
        lid_success_first_tokens_ci=wilson_interval(int(controlled_first.sum()), n),
        default_rate=float(default.mean()), default_rate_ci=wilson_interval(int(default.sum()), n),
        delta_mass=float(delta.mean()), delta_mass_ci=bootstrap_interval([delta], np.mean, **boot),
        leakage_max=float(gains.max()) if len(gains) else 0.0,
        leakage_mean=float(gains.mean()) if len(gains) else 0.0,
        kl=float(kl.mean()), kl_ci=bootstrap_interval([kl], np.mean, **boot),
        nll_delta=float(np.nanmean(nll_change)), nll_delta_ci=bootstrap_interval([nll_change], np.nanmean, **boot),
        en_ppl_delta=math.exp(float(english_nll.nanmean())) - math.exp(float(baseline.english_nll.nanmean())),
        n_utility_contexts=len(contexts.target_prompts),
        relevance=float(relevance.mean()), relevance_ci=bootstrap_interval([relevance], np.mean, **boot),
        **_coherence_summary(items, boot),
        steering_score=steering_score_v2_from_items(controlled, relevance, coherent),
        steering_score_ci=bootstrap_interval([controlled, relevance, coherent], steering_score_v2_from_items, **boot),
        retrieval_relevance=float(retrieved.mean()), retrieval_relevance_ci=wilson_interval(int(retrieved.sum()), n),
        relevance_chance=1.0 / n, lid_success_v1=float(controlled_v1.mean()),
        steering_score_v1=harmonic_mean(float(controlled_v1.mean()), float(retrieved.mean())),
        steering_score_v1_ci=bootstrap_interval([controlled_v1, retrieved], steering_score_from_items, **boot),
        records=[{"prompt": p, "model_prompt": mp, "output": o, "answer": a, "lid": lang, "lid_first_tokens": f,
                  "delta_mass": float(d), "relevance": float(r), **(asdict(item) if item else {}),
                  "retrieval_relevant": bool(rr)}
                 for p, mp, o, a, lang, f, d, r, item, rr in zip(
                     prompts, model_prompts, generation.texts, answers, predicted, first, delta, relevance,
                     items or [None] * n, retrieved, strict=True)],
        provenance={"model": model_metadata(model), "config": asdict(config), "hooks": [name for name, _ in hooks],
                    "prompt_rewritten": prompt_rewriter is not None,
                    "utility_contexts": {"target": len(contexts.target_prompts), "source": len(contexts.source_prompts),
                                         "split": config.utility_split, "corpus": "qa_pairs (help heading -> "
                                         "the paragraph after it, human translations)"},
                    "relevance": scorer_description(scorer) if scorer is not None else {"scorer": None},
                    "lid_candidates": candidates,
                    "steering_score": "harmonic_mean(lid_success, mean(relevance_i * coherent_i))",
                    "intervals": "Wilson for lid_success/default_rate/retrieval_relevance; percentile "
                                 "bootstrap over items (prompts, or utility contexts) otherwise",
                    "token_sets": token_sets.summary()},
    )


def _require_finite(values: Tensor, what: str, item: str) -> None:
    """Non-finite logits would give scores that look real: stop, naming the first item."""
    bad = ~torch.isfinite(values.reshape(len(values), -1)).all(-1)
    if bad.any():
        raise EvaluationError(f"{what} hold NaN or inf (first at {item} {int(bad.nonzero()[0, 0])}, "
                              f"{int(bad.sum())} of {len(values)} {item}s): the steered model produces non-finite "
                              "logits; lower the strength or check the steering vector and hooks")


def _coherence_summary(items: Sequence[CoherenceItem], boot: dict[str, int]) -> dict[str, Any]:
    """The coherence fields of :class:`SteeringMetrics` (NaN when coherence was skipped)."""
    if not items:
        return {"coherence": math.nan, "coherence_ci": (math.nan, math.nan), "repeated_ngram_share": math.nan,
                "distinct_2": math.nan, "output_nll": math.nan}
    coherent = np.array([item.coherent for item in items], dtype=float)
    nll = [item.nll for item in items if not math.isnan(item.nll)]
    return {"coherence": float(coherent.mean()), "coherence_ci": bootstrap_interval([coherent], np.mean, **boot),
            "repeated_ngram_share": float(np.mean([item.repeated_ngram_share for item in items])),
            "distinct_2": float(np.mean([item.distinct_2 for item in items])),
            "output_nll": float(np.mean(nll)) if nll else math.nan}


def _first_tokens(model: Model, texts: Sequence[str], n: int) -> list[str]:
    """Each text's first ``n`` tokens, as text."""
    tokenizer = model.tokenizer
    return [tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:n]) for text in texts]
