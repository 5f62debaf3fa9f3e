"""One evaluation for every steering method: ``evaluate(model, prompts, target, hooks=...) -> SteeringMetrics``.

Any hook set plugs in unchanged. The unsteered reference runs (generations, committed-context distributions,
NLL of reference text) are a :class:`Baseline`, computed once per (model, prompts, target) and reused across
methods. Rates carry 95% intervals: Wilson for binary rates, a seeded percentile bootstrap over prompts (or
texts) for means and for the steering score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from workbench import corpus
from workbench.artifacts import atomic_write_json
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
from workbench.evaluation.utility import final_logits, kl_divergence, sequence_nll
from workbench.generation import Generation, generate_recording
from workbench.interventions import Hook
from workbench.languages import get_language
from workbench.models import model_metadata


class EvaluationError(WorkbenchError):
    """Evaluation inputs that do not fit together (no prompts, a baseline of other prompts)."""


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings shared by every method's evaluation."""

    max_new_tokens: int = 32
    """Greedy tokens generated per prompt."""
    mass_steps: int = 3
    """T: generated steps averaged in the early-step mass dM."""
    commit_tokens: int = 4
    """Reference tokens appended to a prompt to form a committed context for the KL."""
    n_utility_texts: int = 16
    """Held-out target-language and English texts for the NLL / perplexity changes."""
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
    """Corpus split the utility texts come from."""
    bootstrap_resamples: int = 1000
    """Bootstrap resamples for mean-valued metrics and the steering score."""
    seed: int = 0
    """Bootstrap seed."""
    batch_size: int = 8
    """Prompts per generation batch."""

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


@dataclass
class Baseline:
    """Unsteered runs that steered runs are compared with."""

    target: str
    source: str
    prompts: list[str]
    generation: Generation
    committed_suffixes: list[str]
    committed_logits: Tensor
    target_nll: Tensor
    english_nll: Tensor
    kl_context: str


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
    kl_ci: tuple[float, float]
    nll_delta: float
    nll_delta_ci: tuple[float, float]
    en_ppl_delta: float
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


def _utility_texts(lang: str, n: int, split: str) -> list[str]:
    return [row.text for row in corpus.monolingual(lang, split=split, n=n)]


def _committed_suffixes(model: Model, prompts: Sequence[str], references: Sequence[str | None], target: str,
                        config: EvaluationConfig) -> tuple[list[str], str]:
    """The first ``commit_tokens`` tokens of a target-language continuation of each prompt, as text.

    Prompts without a reference borrow held-out target-language text, and the provenance says so.
    """
    fallback = _utility_texts(target, len(prompts), config.utility_split)
    suffixes, borrowed = [], 0
    for index, reference in enumerate(references):
        if not reference:
            reference, borrowed = fallback[index % len(fallback)], borrowed + 1
        ids = model.tokenizer(" " + reference.strip(), add_special_tokens=False)["input_ids"][:config.commit_tokens]
        suffixes.append(model.tokenizer.decode(ids))
    source = "prompt references" if borrowed == 0 else f"prompt references; {borrowed} held-out target texts"
    return suffixes, source


def _committed_logits(model: Model, prompts: Sequence[str], suffixes: Sequence[str], hooks: Sequence[Hook] = ()
                      ) -> Tensor:
    """Next-token logits after prompt + committed suffix, with position rules told where each prompt ends."""
    lengths = [len(ids) for ids in model.tokenizer(list(prompts))["input_ids"]]
    contexts = [prompt + suffix for prompt, suffix in zip(prompts, suffixes, strict=True)]
    return final_logits(model, contexts, hooks=hooks, prompt_lengths=lengths)


def _generate(model: Model, prompts: Sequence[str], hooks: Sequence[Hook], token_sets: TokenSets,
              config: EvaluationConfig) -> Generation:
    """Generate, recording each language's mass in the first ``mass_steps`` next-token distributions."""
    return generate_recording(model, prompts, hooks=hooks, step_reducer=partial(language_mass, masks=token_sets.masks),
                              record_steps=config.mass_steps, max_new_tokens=config.max_new_tokens,
                              batch_size=config.batch_size)


def compute_baseline(model: Model, prompts: Sequence[str], target: str, *, source: str = "en",
                     references: Sequence[str | None] | None = None, token_sets: TokenSets | None = None,
                     config: EvaluationConfig = EvaluationConfig()) -> Baseline:
    """The unsteered runs for ``prompts`` and ``target`` (reuse it across methods)."""
    for code in (target, source):
        get_language(code)  # unknown codes fail here, before any generation
    prompts = list(prompts)
    token_sets = token_sets or token_sets_for(model.tokenizer, config.candidate_languages(target, source))
    references = list(references) if references is not None else [None] * len(prompts)
    generation = _generate(model, prompts, (), token_sets, config)
    suffixes, kl_context = _committed_suffixes(model, prompts, references, target, config)
    return Baseline(
        target=target, source=source, prompts=prompts, generation=generation, committed_suffixes=suffixes,
        committed_logits=_committed_logits(model, prompts, suffixes),
        target_nll=sequence_nll(model, _utility_texts(target, config.n_utility_texts, config.utility_split)),
        english_nll=sequence_nll(model, _utility_texts(source, config.n_utility_texts, config.utility_split)),
        kl_context=kl_context,
    )


def evaluate(model: Model, prompts: Sequence[str], target: str, *, hooks: Sequence[Hook] = (), source: str = "en",
             references: Sequence[str | None] | None = None, config: EvaluationConfig = EvaluationConfig(),
             baseline: Baseline | None = None, token_sets: TokenSets | None = None,
             judge: Judge | None = None, prompt_rewriter: Callable[[str], str] | None = None,
             relevance_references: Sequence[str | None] | None = None) -> SteeringMetrics:
    """Evaluate steering towards ``target`` by ``hooks`` (none: the unsteered model) on English ``prompts``.

    ``references`` are per-prompt target-language continuations for the committed-context KL;
    ``relevance_references`` per-prompt English reference answers that relevance also compares each answer with;
    ``judge`` replaces the configured relevance scorer (e.g. :func:`workbench.evaluation.relevance.llm_judge`).
    Answers are the outputs cut at the first ``"\\nQ:"`` (a hallucinated next question); LID, relevance and
    coherence read the answers. ``prompt_rewriter``
    turns each prompt into the one the model sees (prompting baselines): generation and the committed contexts
    use the rewritten prompt, relevance is judged against the original, and the NLL/perplexity changes are 0
    because the model itself is unchanged.
    """
    if not prompts:
        raise EvaluationError("evaluate needs at least one prompt")
    languages = config.candidate_languages(target, source)
    token_sets = token_sets or token_sets_for(model.tokenizer, languages)
    baseline = baseline or compute_baseline(model, prompts, target, source=source, references=references,
                                            token_sets=token_sets, config=config)
    if baseline.prompts != list(prompts) or (baseline.target, baseline.source) != (target, source):
        raise EvaluationError("baseline was computed for other prompts or languages; recompute it for these")

    model_prompts = [prompt_rewriter(prompt) for prompt in prompts] if prompt_rewriter else list(prompts)
    generation = _generate(model, model_prompts, hooks, token_sets, config)
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
    kl = kl_divergence(baseline.committed_logits,
                       _committed_logits(model, model_prompts, baseline.committed_suffixes, hooks))
    if hooks:
        target_nll = sequence_nll(model, _utility_texts(target, config.n_utility_texts, config.utility_split),
                                  hooks=hooks)
        english_nll = sequence_nll(model, _utility_texts(source, config.n_utility_texts, config.utility_split),
                                   hooks=hooks)
    else:
        target_nll, english_nll = baseline.target_nll, baseline.english_nll
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
        kl=float(kl.mean()), kl_ci=bootstrap_interval([kl.numpy()], np.mean, **boot),
        nll_delta=float(nll_change.mean()), nll_delta_ci=bootstrap_interval([nll_change], np.mean, **boot),
        en_ppl_delta=math.exp(float(english_nll.mean())) - math.exp(float(baseline.english_nll.mean())),
        relevance=float(relevance.mean()), relevance_ci=bootstrap_interval([relevance], np.mean, **boot),
        **_coherence_summary(items, n),
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
                    "prompt_rewritten": prompt_rewriter is not None, "kl_context": baseline.kl_context,
                    "relevance": scorer_description(scorer) if scorer is not None else {"scorer": None},
                    "lid_candidates": candidates,
                    "steering_score": "harmonic_mean(lid_success, mean(relevance_i * coherent_i))",
                    "intervals": "Wilson for lid_success/default_rate/coherence/retrieval_relevance; percentile "
                                 "bootstrap over prompts otherwise",
                    "token_sets": token_sets.summary()},
    )


def _coherence_summary(items: Sequence[CoherenceItem], n: int) -> dict[str, Any]:
    """The coherence fields of :class:`SteeringMetrics` (NaN when coherence was skipped)."""
    if not items:
        return {"coherence": math.nan, "coherence_ci": (math.nan, math.nan), "repeated_ngram_share": math.nan,
                "distinct_2": math.nan, "output_nll": math.nan}
    coherent = sum(item.coherent for item in items)
    nll = [item.nll for item in items if not math.isnan(item.nll)]
    return {"coherence": coherent / n, "coherence_ci": wilson_interval(coherent, n),
            "repeated_ngram_share": float(np.mean([item.repeated_ngram_share for item in items])),
            "distinct_2": float(np.mean([item.distinct_2 for item in items])),
            "output_nll": float(np.mean(nll)) if nll else math.nan}


def _first_tokens(model: Model, texts: Sequence[str], n: int) -> list[str]:
    """Each text's first ``n`` tokens, as text."""
    tokenizer = model.tokenizer
    return [tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:n]) for text in texts]
