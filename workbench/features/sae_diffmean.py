"""``sae-diffmean`` (CLaS-Bench's SAE method): the difference of the target- and source-language mean SAE latents
at one residual layer, added in latent space and decoded, the SAE error term kept:
``h + decode(max(z + strength * delta, 0)) - decode(z)`` (:class:`workbench.features.steer.LatentShift`).

``delta`` is the mean over parallel discovery pairs of each sentence's token-mean latents, target minus source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workbench import corpus
from workbench.backends import Model
from workbench.features.encode import encode_texts
from workbench.features.sae_method import SaeMethodBase
from workbench.features.steer import LatentShift
from workbench.interventions import Intervention, PositionRule
from workbench.methods import Treatment


@dataclass(frozen=True)
class SaeDiffMeanData:
    """The text the latent means are taken over."""

    n_pairs: int = 256
    """Parallel pairs (target, source) of the split."""
    split: str = "discovery"
    """Corpus split of the pairs (never dev or eval)."""


@dataclass
class SaeDiffMean(SaeMethodBase):
    """Shift the SAE latents by the target-minus-source mean latents (clipped at 0), decode, keep the error."""

    data: SaeDiffMeanData = field(default_factory=SaeDiffMeanData)
    """Which pairs the latent means come from."""
    name: str = "sae-diffmean"

    def fingerprint(self) -> dict[str, Any]:
        return {"sae": self.sae.to_dict(), "data": vars(self.data)}

    def treatment(self, model: Model, target: str, source: str, *, layer: int | None, strength: float,
                  rule: PositionRule) -> Treatment:
        hook_name, sae = self.sae_at(model, layer)

        def fit() -> tuple[dict[str, Any], dict[str, Any]]:
            rows = corpus.parallel([source, target], split=self.data.split, n=self.data.n_pairs)
            encoded = encode_texts(model, {hook_name: sae}, {lang: [row.text[lang] for row in rows]
                                                             for lang in (target, source)},
                                   description=f"sae-diffmean latents at {hook_name}")
            pooled = encoded.pooled[hook_name]
            delta = pooled[encoded.rows(target)].mean(0) - pooled[encoded.rows(source)].mean(0)
            return {"delta": delta}, {"pairs": len(rows), "split": self.data.split,
                                      "raised": int((delta > 0).sum()), "lowered": int((delta < 0).sum())}

        tensors, record = self.fitted(model, target, source, layer, vars(self.data), fit)
        return Treatment(
            interventions=(Intervention(hook_name, LatentShift(sae, tensors["delta"], strength), rule),),
            description=f"SAE-DiffMean {source}->{target} at {hook_name} x{strength:g} ({record['raised']} latents "
                        f"raised, {record['lowered']} lowered), positions {rule}",
            provenance={"site": hook_name, "sae": self.sae.to_dict(), **record})
