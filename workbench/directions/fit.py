"""Residual-stream language directions (the CLaS-Bench family): DiffMean, PCA, LDA, logistic probe.

Every direction is computed per layer from one harvest (:func:`workbench.activations.harvest` with token
samples), so a layer sweep costs one pass over the data. A :class:`DirectionSet` holds, per layer, a unit vector
``u`` and a *natural scale*: the component of the language means' difference along it, ``(mu_t - mu_s) . u``.
Steering adds ``strength * scale * u`` (``scale="natural"``: strength 1 moves the source mean's projection on
``u`` onto the target mean's, so every method pushes as far as the languages actually differ along its own
direction; for DiffMean this is exactly the raw difference of means, ``||mu_t - mu_s||``) or ``strength * u``
(``scale="unit"``, CLaS-Bench's normalised convention). A direction nearly orthogonal to the means' difference
(LDA's whitened direction often is) gets a small natural scale instead of being pushed ``||mu_t - mu_s||`` into
low-variance dimensions.

The methods, per layer (``mu`` = mean over all non-pad, non-BOS tokens; samples = a uniform token sample):

- ``diffmean``: ``mu_target - mu_source``.
- ``pca``: first principal component of the target and source token samples pooled and centred together,
  oriented towards the target mean (METHODS: "top components of target-language activations", read as the
  component separating the two languages; the top component of the target samples alone is dominated by
  within-language variance).
- ``lda``: ``(S_w + ridge I)^-1 (mu_target - mu_source)``, ``S_w`` the pooled within-class covariance.
- ``probe``: logistic regression, target tokens vs tokens of every other harvested language, fitted on
  standardised features and mapped back to activation space (``w / sigma``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import einops
import numpy as np
import torch
from jaxtyping import Float
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from workbench.activations import ActivationStats
from workbench.artifacts import atomic_write_json, load_tensors, read_json, save_tensors
from workbench.errors import WorkbenchError
from workbench.sites import Site

DIRECTION_METHODS = ("diffmean", "pca", "lda", "probe")


class DirectionError(WorkbenchError):
    """A direction that cannot be computed or applied (unknown method, missing language, too few samples)."""


@dataclass(frozen=True)
class DirectionConfig:
    """How directions are fitted from harvested statistics."""

    lda_ridge: float = 1e-6
    """Ridge added to the within-class covariance's diagonal (METHODS: 1e-6)."""
    probe_c: float = 1.0
    """Inverse L2 regularisation of the logistic probe (sklearn's ``C``)."""
    probe_max_iter: int = 500
    """Iterations of the probe's L-BFGS solver."""
    seed: int = 0
    """Seed of the probe's solver."""

    def __post_init__(self) -> None:
        if self.lda_ridge < 0 or self.probe_c <= 0:
            raise DirectionError("lda_ridge must be >= 0 and probe_c > 0")


def _unit(vector: Tensor) -> Tensor:
    return vector / vector.norm().clamp_min(1e-12)


def diffmean_direction(mean_target: Float[Tensor, " d"], mean_source: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    """Unit ``mu_target - mu_source``."""
    return _unit(mean_target - mean_source)


def pca_direction(target: Float[Tensor, "n d"], source: Float[Tensor, "m d"]) -> Float[Tensor, " d"]:
    """First principal component of both samples pooled and centred, pointing from the source to the target mean."""
    pooled = torch.cat([target, source]).double()
    centred = pooled - pooled.mean(0)
    _, _, components = torch.linalg.svd(centred, full_matrices=False)
    top = components[0]
    if (target.double().mean(0) - source.double().mean(0)) @ top < 0:
        top = -top
    return top.float()


def lda_direction(target: Float[Tensor, "n d"], source: Float[Tensor, "m d"], ridge: float = 1e-6
                  ) -> Float[Tensor, " d"]:
    """Unit ``(S_w + ridge I)^-1 (mu_target - mu_source)`` with ``S_w`` the pooled within-class covariance."""
    target, source = target.double(), source.double()
    mu_t, mu_s = target.mean(0), source.mean(0)
    centred = torch.cat([target - mu_t, source - mu_s])
    within = centred.T @ centred / max(len(centred) - 2, 1)
    within += ridge * torch.eye(within.shape[0], dtype=within.dtype)
    return _unit(torch.linalg.lstsq(within, (mu_t - mu_s).unsqueeze(-1)).solution.squeeze(-1)).float()


def probe_direction(positive: Float[Tensor, "n d"], negative: Float[Tensor, "m d"], *, c: float = 1.0,
                    max_iter: int = 500, seed: int = 0) -> Float[Tensor, " d"]:
    """Unit weight vector of a logistic probe (positive vs negative tokens), in activation space."""
    features = torch.cat([positive, negative]).double().numpy()
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    mean, std = features.mean(0), features.std(0) + 1e-8
    probe = LogisticRegression(C=c, max_iter=max_iter, random_state=seed).fit((features - mean) / std, labels)
    return _unit(torch.from_numpy(probe.coef_[0] / std)).float()


@dataclass(frozen=True)
class DirectionSet:
    """One method's direction at every harvested layer of a site kind, with its natural scale."""

    method: str
    """``diffmean``, ``pca``, ``lda`` or ``probe``."""
    target: str
    """Language the directions point to."""
    source: str
    """Language they point away from."""
    kind: str
    """Site kind (``resid_post``); the hook of layer l is ``Site(l, kind).hook_name``."""
    layers: tuple[int, ...]
    """Layers, in the order of ``units``' first axis."""
    units: Float[Tensor, "layer d"]
    """Unit direction per layer."""
    scale: Float[Tensor, " layer"]
    """``(mu_target - mu_source) . unit`` per layer: the length strength 1 adds with ``scale='natural'``."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Model, split, rows, token counts, negatives and config: everything the numbers depend on."""

    def site(self, layer: int) -> str:
        return Site(layer, self.kind).hook_name

    def vector(self, layer: int, scale: Literal["natural", "unit"] = "natural") -> Float[Tensor, " d"]:
        """The vector that strength 1 adds at ``layer``."""
        if layer not in self.layers:
            raise DirectionError(f"no {self.method} direction at layer {layer}; layers: {list(self.layers)}")
        if scale not in ("natural", "unit"):
            raise DirectionError(f"scale must be 'natural' or 'unit', got {scale!r}")
        index = self.layers.index(layer)
        return self.units[index] * (self.scale[index] if scale == "natural" else 1.0)

    def save(self, directory: str | Path) -> Path:
        """``<method>.safetensors`` (units, scale) and ``<method>.json`` (everything else), atomically."""
        directory = Path(directory)
        save_tensors({"units": self.units, "scale": self.scale}, directory / f"{self.method}.safetensors")
        info = {key: value for key, value in asdict(self).items() if key not in ("units", "scale")}
        atomic_write_json(directory / f"{self.method}.json", info)
        return directory

    @classmethod
    def load(cls, directory: str | Path, method: str) -> DirectionSet:
        directory = Path(directory)
        info = read_json(directory / f"{method}.json")
        tensors = load_tensors(directory / f"{method}.safetensors")
        return cls(**{**info, "layers": tuple(info["layers"])}, units=tensors["units"], scale=tensors["scale"])


def compute_directions(stats: ActivationStats, target: str, source: str = "en",
                       methods: Sequence[str] = DIRECTION_METHODS, *, kind: str = "resid_post",
                       config: DirectionConfig = DirectionConfig(), metadata: dict[str, Any] | None = None
                       ) -> dict[str, DirectionSet]:
    """Every requested method's directions at every harvested layer of ``kind``, from one harvest.

    PCA, LDA and the probe need token samples (``HarvestConfig(sample_tokens=...)``); the probe's negatives are
    every harvested group other than ``target``.
    """
    unknown = [method for method in methods if method not in DIRECTION_METHODS]
    if unknown:
        raise DirectionError(f"unknown direction method(s) {unknown}; known: {', '.join(DIRECTION_METHODS)}")
    missing = [lang for lang in (target, source) if lang not in stats.groups]
    if missing:
        raise DirectionError(f"language(s) {missing} were not harvested; harvested: {', '.join(stats.groups)}")
    layers = sorted(site.layer for site in stats.sites if site.kind == kind)
    if not layers:
        raise DirectionError(f"no {kind} sites in the harvest")
    negatives = [group for group in stats.groups if group != target]
    means = {lang: stats.stack("mean", kind, [lang])[..., 0] for lang in (target, source)}
    difference = means[target] - means[source]
    units: dict[str, list[Tensor]] = {method: [] for method in methods}
    for index, layer in enumerate(layers):
        site = Site(layer, kind)
        if "diffmean" in methods:
            units["diffmean"].append(diffmean_direction(means[target][index], means[source][index]))
        if {"pca", "lda", "probe"} & set(methods):
            target_samples, source_samples = stats.samples(site, target), stats.samples(site, source)
        if "pca" in methods:
            units["pca"].append(pca_direction(target_samples, source_samples))
        if "lda" in methods:
            units["lda"].append(lda_direction(target_samples, source_samples, config.lda_ridge))
        if "probe" in methods:
            others = torch.cat([stats.samples(site, group) for group in negatives])
            units["probe"].append(probe_direction(target_samples, others, c=config.probe_c,
                                                  max_iter=config.probe_max_iter, seed=config.seed))
    shared = {**(metadata or {}), "config": asdict(config), "probe_negatives": negatives,
              "tokens": {group: stats.count(Site(layers[0], kind), group) for group in stats.groups}}
    stacked = {method: torch.stack(per_layer) for method, per_layer in units.items()}
    return {method: DirectionSet(method=method, target=target, source=source, kind=kind, layers=tuple(layers),
                                 units=unit, scale=einops.einsum(difference, unit, "layer d, layer d -> layer"),
                                 metadata=shared)
            for method, unit in stacked.items()}
