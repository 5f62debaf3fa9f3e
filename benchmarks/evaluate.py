"""What one evaluation costs next to the generation it scores: 32 eval prompts x 32 tokens, all metrics.

Both sides steer with the same vector (layer 6, a DiffMean-sized norm) on the ``hf`` backend: ``generation`` is the
bare steered generation of the prompts (same batch size and length as the evaluation's), ``evaluation`` is
:func:`workbench.evaluation.evaluate` with the default config (LID on two cuts, language mass, leakage, encoder
relevance, coherence, the v1 retrieval relevance, and the KL / NLL / English perplexity on the utility contexts)
against a stored baseline, as a benchmark or calibration sweep runs it. Rounds alternate so background load hits both
alike; the median round is reported. One more evaluation under cProfile says where its time goes. The encoder's
per-language calibrations ship with the package. Last line: ``evaluation_vs_generation_ratio: <x>`` (target <= 1.5).

    python benchmarks/evaluate.py [--rounds 3] [--target es]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re

import torch
from timing import alternating_medians

from workbench import corpus
from workbench.evaluation import QA_TEMPLATE, EvaluationConfig, compute_baseline, evaluate
from workbench.generation import generate_recording
from workbench.interventions import add_vector
from workbench.models import load_model

N_PROMPTS, NEW_TOKENS = 32, 32
PARTS = {
    "generation (steered, language mass recorded)": "evaluate.py:.*\\(_generate\\)",
    "utility passes (KL, NLL, English perplexity)": "evaluate.py:.*\\(_answer_costs\\)",
    "coherence (unsteered NLL of the answers)": "coherence.py:.*\\(score_coherence\\)",
    "encoder relevance": "encoder.py:.*\\(__call__\\)",
    "retrieval relevance (v1 score)": "relevance.py:.*\\(retrieval_relevance\\)",
    "language identification": "lid.py:.*\\(identify_language\\)",
}


def breakdown(run) -> dict[str, float]:
    """Cumulative seconds of each part of one profiled ``run`` (and its total)."""
    profile = cProfile.Profile()
    profile.runcall(run)
    stats = pstats.Stats(profile)
    seconds = {"total": stats.total_tt}
    for part, pattern in PARTS.items():
        rows = [value for (path, line, name), value in stats.stats.items()
                if re.search(pattern, f"{path}:{line}({name})")]
        seconds[part] = sum(row[3] for row in rows)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", default="es")
    args = parser.parse_args()

    model = load_model(backend="hf")
    rows = corpus.prompts(split="eval", n=N_PROMPTS)
    prompts = [QA_TEMPLATE.format(prompt=p.prompt) for p in rows]
    english = [p.reference.get("en") for p in rows]
    config = EvaluationConfig(max_new_tokens=NEW_TOKENS)
    baseline = compute_baseline(model, prompts, args.target, config=config)
    vector = 60 * torch.nn.functional.normalize(torch.randn(model.cfg.d_model, generator=torch.Generator()
                                                            .manual_seed(0)), dim=0)
    hooks = [add_vector(model, "blocks.6.hook_resid_post", vector)]

    def generation() -> None:
        generate_recording(model, prompts, hooks=hooks, record_steps=0, max_new_tokens=NEW_TOKENS,
                           batch_size=config.batch_size)

    def evaluation() -> None:
        evaluate(model, prompts, args.target, hooks=hooks, relevance_references=english, baseline=baseline,
                 config=config)

    median, timings = alternating_medians({"generation": generation, "evaluation": evaluation}, args.rounds)
    parts = breakdown(evaluation)
    print(f"threads: {torch.get_num_threads()}; {N_PROMPTS} prompts x {NEW_TOKENS} tokens; "
          f"{config.n_utility_contexts} target + {config.n_utility_contexts} English utility contexts "
          f"x {config.utility_answer_tokens} answer tokens; rounds: {args.rounds}")
    for name, values in timings.items():
        print(f"{name}: median {median[name]:.2f} s ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"one profiled evaluation: {parts.pop('total'):.2f} s, of which")
    for part, seconds in parts.items():
        print(f"  {part}: {seconds:.2f} s")
    print(f"evaluation_vs_generation_ratio: {median['evaluation'] / median['generation']:.3f}")


if __name__ == "__main__":
    main()
