"""How long a feature card and a neuron card take from cached statistics, with the model loaded (the issue's bar:
<= 30 s each on 2 cores).

The first card of a site builds the site's unit statistics and the clean held-out CE (one bounded pass, cached in
the store); this script builds them first, then times each card ``--rounds`` times and reports the medians. The
feature card needs a layer-6 residual SAE: ``--sae-dir`` (an SAELens folder), else the store's 1,024-latent
``blocks.6.hook_resid_post`` SAE that ``make demo`` trains. Last line: ``card_seconds: <slower median>``.

    python benchmarks/cards.py [--sae-dir DIR] [--latent 487] [--layer 17 --neuron 1066] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from workbench.features.cards import feature_card
from workbench.models import load_model
from workbench.neurons.cards import neuron_card
from workbench.saes.io import load_sae, read_sae_config
from workbench.store import cache_dir
from workbench.views.contexts import CardConfig


def _demo_sae() -> Path:
    for config in sorted((cache_dir() / "saes").glob("*/blocks.6.hook_resid_post-*/cfg.json")):
        if read_sae_config(config.parent).get("d_sae") == 1024:
            return config.parent
    raise SystemExit("no 1,024-latent layer-6 residual SAE in the store: run `make demo` or pass --sae-dir")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae-dir", type=Path, default=None)
    parser.add_argument("--latent", type=int, default=487)
    parser.add_argument("--layer", type=int, default=17)
    parser.add_argument("--neuron", type=int, default=1066)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = load_model(backend="hf")
    sae = load_sae(args.sae_dir or _demo_sae(), model)
    config = CardConfig()
    cards = {"feature": lambda: feature_card(model, sae, args.latent, config),
             "neuron": lambda: neuron_card(model, args.layer, args.neuron, config)}
    medians = {}
    for name, card in cards.items():
        card()  # builds (or reads) the cached statistics
        seconds = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            card()
            seconds.append(time.perf_counter() - started)
        medians[name] = statistics.median(seconds)
        each = ", ".join(f"{value:.1f}" for value in seconds)
        print(f"{name} card: median {medians[name]:.1f} s over {args.rounds} ({each})")
    print(f"card_seconds: {max(medians.values()):.1f}")


if __name__ == "__main__":
    main()
