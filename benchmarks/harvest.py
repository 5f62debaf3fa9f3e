"""Harvest throughput vs the plain HF body-only forward, on the same 8x128-token batches, in one run.

Prints tokens/s of each and, last, ``harvest_vs_hf_body_ratio: <x>`` (workbench / HF; target >= 0.85).
The workbench side runs ``workbench.activations.harvest`` on the ``hf`` backend, collecting all
``hook_resid_post`` and all ``mlp.hook_post`` sites with the default statistics; the same with per-unit
histograms on the MLP sites (quantiles) is printed for information.
Rounds alternate between the runs so background load hits all alike; the median round time is reported.

With ``--neurons``: the language-neuron harvest instead (all ``mlp.hook_pre`` sites with per-unit histograms, the
neuron study's settings: what LAPE, 90p and CLAS read); last line ``neuron_harvest_vs_hf_body_ratio: <x>``.

    python benchmarks/harvest.py [--batches 4] [--rounds 5] [--neurons]
"""

from __future__ import annotations

import argparse

import torch
from timing import alternating_medians

from workbench.activations import HarvestConfig, TokenBatch, harvest
from workbench.models import load_hf_model, load_model
from workbench.sites import sites_for


def make_batches(n_batches: int, vocab: int, seed: int = 0) -> list[TokenBatch]:
    """Seeded token ids (BOS first, no padding): throughput does not depend on which tokens they are."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        tokens = torch.randint(1000, vocab - 1000, (8, 128), generator=generator)
        tokens[:, 0] = 2
        batches.append(TokenBatch(tokens, torch.ones_like(tokens), ["bench"] * 8))
    return batches


def body_forward(hf_model: torch.nn.Module, batches: list[TokenBatch]):
    """The reference: the plain HF decoder body (no unembedding) over ``batches``."""
    def run() -> None:
        with torch.inference_mode():
            for batch in batches:
                hf_model.model(input_ids=batch.tokens, attention_mask=batch.attention_mask)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--neurons", action="store_true", help="Time the neuron study's mlp_pre histogram harvest.")
    args = parser.parse_args()
    if args.neurons:
        neuron_harvest(args)
        return

    hf_model, _ = load_hf_model()
    fast = load_model(backend="hf")
    sites = sites_for(fast, ["resid_post", "mlp_post"])
    batches = make_batches(args.batches, fast.cfg.d_vocab)
    n_tokens = sum(batch.tokens.numel() for batch in batches)

    hf_body = body_forward(hf_model, batches)
    def workbench_harvest() -> None:
        harvest(fast, batches, sites, progress=False)

    def harvest_with_histograms() -> None:
        harvest(fast, batches, sites, config=HarvestConfig(histogram_kinds=("mlp_post",)), progress=False)

    median, _ = alternating_medians({"hf_body": hf_body, "harvest": workbench_harvest,
                                     "harvest_with_mlp_histograms": harvest_with_histograms}, args.rounds)
    throughput = {name: n_tokens / seconds for name, seconds in median.items()}
    print(f"threads: {torch.get_num_threads()}, tokens per round: {n_tokens}, sites: {len(sites)}")
    for name, value in throughput.items():
        print(f"{name}_tokens_per_s: {value:.1f}")
    print(f"harvest_vs_hf_body_ratio: {throughput['harvest'] / throughput['hf_body']:.3f}")


def neuron_harvest(args: argparse.Namespace) -> None:
    from workbench.neurons.data import TokenDataConfig

    hf_model, _ = load_hf_model()
    fast = load_model(backend="hf")
    sites = sites_for(fast, ["mlp_pre"])
    tokens = TokenDataConfig()
    config = HarvestConfig(histogram_kinds=("mlp_pre",), histogram_bins=tokens.histogram_bins,
                           histogram_max_abs=tokens.histogram_max_abs)
    batches = make_batches(args.batches, fast.cfg.d_vocab)
    n_tokens = sum(batch.tokens.numel() for batch in batches)

    hf_body = body_forward(hf_model, batches)
    def neurons() -> None:
        harvest(fast, batches, sites, config=config, progress=False)

    median, _ = alternating_medians({"hf_body": hf_body, "neuron_harvest": neurons}, args.rounds)
    throughput = {name: n_tokens / seconds for name, seconds in median.items()}
    print(f"threads: {torch.get_num_threads()}, tokens per round: {n_tokens}, sites: {len(sites)}, "
          f"histogram bins: {config.histogram_bins}")
    for name, value in throughput.items():
        print(f"{name}_tokens_per_s: {value:.1f}")
    print(f"neuron_harvest_vs_hf_body_ratio: {throughput['neuron_harvest'] / throughput['hf_body']:.3f}")


if __name__ == "__main__":
    main()
