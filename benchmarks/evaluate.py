"""What the new relevance and coherence cost: one evaluation (32 prompts x 32 tokens) with and without them.

Both sides evaluate the same DiffMean-sized steering vector on the ``hf`` backend with the same stored baseline:
``with`` is the default evaluation (encoder relevance, coherence, retrieval relevance for the v1 score); ``without``
sets ``relevance=None, coherence=None`` (the first evaluation's work). Rounds alternate so background load hits
both alike; the median round is reported. The encoder's per-language calibrations are built before timing (they
are cached once per machine). Last line: ``relevance_overhead: <x>`` (with / without; target <= 1.10).

    python benchmarks/evaluate.py [--rounds 3] [--target es]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from timing import alternating_medians

from workbench import corpus
from workbench.evaluation import QA_TEMPLATE, EvaluationConfig, compute_baseline, evaluate
from workbench.evaluation.encoder import language_calibration
from workbench.interventions import add_vector
from workbench.models import load_model

N_PROMPTS, NEW_TOKENS = 32, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", default="es")
    args = parser.parse_args()

    model = load_model(backend="hf")
    rows = corpus.prompts(split="eval", n=N_PROMPTS)
    prompts = [QA_TEMPLATE.format(prompt=p.prompt) for p in rows]
    english = [p.reference.get("en") for p in rows]
    with_new = EvaluationConfig(max_new_tokens=NEW_TOKENS)
    without = dataclasses.replace(with_new, relevance=None, coherence=None)
    for code in ("en", args.target):
        language_calibration(code)
    baseline = compute_baseline(model, prompts, args.target, config=with_new)
    vector = 60 * torch.nn.functional.normalize(torch.randn(model.cfg.d_model, generator=torch.Generator()
                                                            .manual_seed(0)), dim=0)
    hooks = [add_vector(model, "blocks.6.hook_resid_post", vector)]

    def run(config: EvaluationConfig) -> None:
        evaluate(model, prompts, args.target, hooks=hooks, relevance_references=english,
                 baseline=baseline, config=config)

    median, timings = alternating_medians({"with": lambda: run(with_new), "without": lambda: run(without)},
                                          args.rounds)
    print(f"threads: {torch.get_num_threads()}; {N_PROMPTS} prompts x {NEW_TOKENS} tokens; rounds: {args.rounds}")
    for name, values in timings.items():
        print(f"{name}: median {median[name]:.2f} s ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"relevance_overhead: {median['with'] / median['without']:.3f}")


if __name__ == "__main__":
    main()
