"""Steered generation vs plain HF ``generate`` on the same prompts (batch 8, 32 new tokens), in one run.

HF side: the plain HF model's ``generate`` (greedy, KV cache, exactly 32 new tokens). Workbench side:
``workbench.generation.generate_recording`` on the ``hf`` backend with a DiffMean-sized vector added at
``blocks.6.hook_resid_post`` under the position rule ``final+8`` (the rule that tracks KV-cached positions), also
recording the language mass of the first 3 steps as the evaluation does. Both generate exactly 32 tokens.
Rounds alternate so background load hits both alike; the median round is reported. Last line:
``steered_generate_vs_hf_ratio: <x>`` (workbench tokens/s / HF tokens/s; target >= 0.85).

    python benchmarks/generate.py [--rounds 5] [--rule final+8]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from timing import alternating_medians

from workbench import corpus
from workbench.evaluation import QA_TEMPLATE, language_mass, token_sets_for
from workbench.generation import generate_recording
from workbench.interventions import AddVector, Intervention, PositionRule, hooks_for
from workbench.models import load_hf_model, load_model

BATCH, NEW_TOKENS = 8, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rule", default="final+8")
    args = parser.parse_args()

    hf_model, tokenizer = load_hf_model()
    fast = load_model(backend="hf")
    prompts = [QA_TEMPLATE.format(prompt=p.prompt) for p in corpus.prompts(split="eval", n=BATCH)]
    vector = 500 * torch.nn.functional.normalize(torch.randn(fast.cfg.d_model, generator=torch.Generator()
                                                             .manual_seed(0)), dim=0)
    steer = [Intervention("blocks.6.hook_resid_post", AddVector(vector), PositionRule.parse(args.rule))]
    masks = token_sets_for(fast.tokenizer, ["en", "hi", "es"]).masks
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")

    def hf_generate() -> None:
        with torch.inference_mode():
            hf_model.generate(**encoded, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                              top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)

    def steered_generate() -> None:
        generate_recording(fast, prompts, hooks=hooks_for(fast, steer), step_reducer=partial(language_mass,
                           masks=masks), record_steps=3, max_new_tokens=NEW_TOKENS, batch_size=BATCH,
                           stop_at_eos=False)

    median, _ = alternating_medians({"hf_generate": hf_generate, "steered_generate": steered_generate}, args.rounds)
    rates = {name: BATCH * NEW_TOKENS / seconds for name, seconds in median.items()}
    for name, rate in rates.items():
        print(f"{name}: {rate:.1f} new tokens/s (median of {args.rounds} rounds)")
    print(f"steered_generate_vs_hf_ratio: {rates['steered_generate'] / rates['hf_generate']:.3f}")


if __name__ == "__main__":
    main()
