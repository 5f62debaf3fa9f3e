"""``langfir``: the steering vector LangFIR builds from its surviving features at one residual layer.

Survivors are the SAE features that fire on at least ``min_target_rate`` of the target language's monolingual
tokens and on less than ``max_random_rate`` of random-token positions (METHODS section 4; monolingual data only).
The vector is what the survivors write on average on target-language text, ``sum_j mean_j(target) * d_j`` with
``d_j`` the decoder vectors; strength 1 adds it once. A layer with no survivor steers nothing (the provenance says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from workbench import corpus
from workbench.backends import Model
from workbench.features.analysis import LangFIRConfig
from workbench.features.encode import encode_texts, firing_rates, random_token_batches
from workbench.features.sae_method import SaeMethodBase
from workbench.features.scores import langfir_mask
from workbench.features.steer import decoder_vectors
from workbench.interventions import AddVector, Intervention, PositionRule
from workbench.methods import Treatment


@dataclass
class LangFIRSteering(SaeMethodBase):
    """Add the mean target-language write of LangFIR's surviving features."""

    filter: LangFIRConfig = field(default_factory=LangFIRConfig)
    """The random-token filter (its texts come from the discovery split)."""
    seed: int = 0
    """Seed of the random-token sequences."""
    strengths: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    """Multiples of the survivors' mean write (on Gemma 3 270M's layer 6: norm ~20-30, against ~550 for the
    languages' mean difference, so the grid reaches far)."""
    name: str = "langfir"

    def fingerprint(self) -> dict[str, Any]:
        return {"sae": self.sae.to_dict(), **self._settings()}

    def _settings(self) -> dict[str, Any]:
        return {"filter": vars(self.filter), "seed": self.seed}

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        hook_name, sae = self.sae_at(model, layer)

        def fit() -> tuple[dict[str, Any], dict[str, Any]]:
            texts = [row.text for row in corpus.monolingual(target, split="discovery", n=self.filter.n_texts)]
            encoded = encode_texts(model, {hook_name: sae}, {target: texts},
                                   description=f"LangFIR {target} text at {hook_name}")
            random_rate = firing_rates(model, {hook_name: sae}, random_token_batches(
                model.tokenizer, self.filter.n_random, self.filter.random_length, seed=self.seed),
                                       description="LangFIR random tokens")[hook_name]
            target_rate = encoded.firing_rate(hook_name, target)
            survivors = torch.nonzero(langfir_mask(target_rate.float(), random_rate.float(),
                                                   min_target_rate=self.filter.min_target_rate,
                                                   max_random_rate=self.filter.max_random_rate)).flatten()
            mean_activation = encoded.active_sum[hook_name][0] / int(encoded.token_count[0])
            weights = mean_activation[survivors].to(sae.W_dec.dtype)
            vector = (weights[:, None] * decoder_vectors(sae, survivors)).sum(0) if len(survivors) else \
                torch.zeros(int(sae.cfg.d_in))
            return {"vector": vector.float().cpu(), "survivors": survivors}, {
                "survivors": survivors.tolist(), "target_rate": target_rate[survivors].tolist(),
                "random_rate": random_rate[survivors].tolist(), "texts": len(texts), "split": "discovery"}

        tensors, record = self.fitted(model, target, source, layer, self._settings(), fit)
        survivors = record["survivors"]
        interventions = (Intervention(hook_name, AddVector(tensors["vector"], strength), rule),) if survivors else ()
        return Treatment(
            interventions=interventions,
            description=f"LangFIR {target} at {hook_name} x{strength:g} ({len(survivors)} surviving features"
                        f"{'' if survivors else ': nothing to steer with'}), positions {rule}",
            provenance={"site": hook_name, "sae": self.sae.to_dict(), "seed": self.seed, **record})
