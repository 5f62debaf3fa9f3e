"""Evaluation shared by every steering method (language control, mass, leakage, utility, relevance, coherence,
scores).

    from workbench.evaluation import evaluate, EvaluationConfig, QA_TEMPLATE
    metrics = evaluate(model, prompts, "hi", hooks=[...])      # -> SteeringMetrics (json via .save(path))
"""

from workbench.evaluation.coherence import CoherenceConfig, CoherenceItem, score_coherence
from workbench.evaluation.encoder import EncoderRelevance, language_calibration
from workbench.evaluation.evaluate import (
    Baseline,
    EvaluationConfig,
    EvaluationError,
    SteeringMetrics,
    compute_baseline,
    evaluate,
)
from workbench.evaluation.lid import UNKNOWN, cut_at_next_turn, identify_language, language_scores, lid_candidates
from workbench.evaluation.mass import delta_mass, language_mass, leakage
from workbench.evaluation.relevance import (
    ConditionalLikelihoodRelevance,
    JudgeRelevance,
    RelevanceScorer,
    RetrievalRelevance,
    llm_judge,
    pooled_representations,
    relevance_scores,
    retrieval_relevance,
)
from workbench.evaluation.scores import bootstrap_interval, harmonic_mean, wilson_interval
from workbench.evaluation.token_sets import TokenSetConfig, TokenSets, build_token_sets, token_sets_for
from workbench.evaluation.utility import final_logits, kl_divergence, sequence_nll
from workbench.prompting import QA_TEMPLATE

__all__ = [
    "QA_TEMPLATE", "UNKNOWN", "Baseline", "CoherenceConfig", "CoherenceItem", "ConditionalLikelihoodRelevance",
    "EncoderRelevance", "EvaluationConfig", "EvaluationError", "JudgeRelevance", "RelevanceScorer",
    "RetrievalRelevance", "SteeringMetrics", "TokenSetConfig", "TokenSets", "cut_at_next_turn",
    "language_calibration", "lid_candidates", "relevance_scores", "score_coherence",
    "bootstrap_interval", "build_token_sets", "compute_baseline", "delta_mass", "evaluate", "final_logits",
    "harmonic_mean", "identify_language", "kl_divergence", "language_mass", "language_scores", "leakage",
    "llm_judge", "pooled_representations", "retrieval_relevance", "sequence_nll", "token_sets_for",
    "wilson_interval",
]
