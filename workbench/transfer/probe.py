"""The fast adaptation: a linear probe on mean-pooled frozen residual representations, trained on English only.

Interventions are active while the texts are read, so a probe trained on clean English representations is applied
to intervened target-language ones (an intervention at a layer after the probe's cannot reach it; the probe's layer
is in every result).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from workbench.backends import Model
from workbench.errors import WorkbenchError
from workbench.interventions import Steer, steering
from workbench.readouts import pooled_means

__all__ = ["FittedProbe", "ProbeConfig", "ProbeError", "fit_probe", "pooled_features", "probe_layers"]


class ProbeError(WorkbenchError):
    """Probe layers the model does not have."""


@dataclass(frozen=True)
class ProbeConfig:
    """The probe and the reading it is trained on."""

    layers: tuple[int, ...] | None = None
    """Residual layers (``hook_resid_post``) tried; the best English dev accuracy wins. None: 1/3, 1/2, 2/3, 5/6 of
    the depth and the last layer."""
    max_length: int = 96
    """Tokens read per text."""
    batch_size: int = 16
    """Texts per forward pass."""
    inverse_regularisation: float = 1.0
    """Logistic regression's C (on standardised features)."""


def probe_layers(model: Model, config: ProbeConfig) -> tuple[int, ...]:
    """The layers ``config`` tries on ``model``."""
    n = model.cfg.n_layers
    if config.layers is not None:
        outside = [layer for layer in config.layers if not 0 <= layer < n]
        if outside or not config.layers:
            raise ProbeError(f"probe layers {list(config.layers)} must be given and lie in 0..{n - 1} for this model")
        return tuple(config.layers)
    return tuple(sorted({n // 3, n // 2, (2 * n) // 3, (5 * n) // 6, n - 1}))


def pooled_features(model: Model, texts: Sequence[str], layers: Sequence[int], config: ProbeConfig, *,
                    interventions: Sequence[Steer] = (), progress: bool = True, description: str = "pool"
                    ) -> Float[Tensor, "layer text d_model"]:
    """Mean over each text's tokens of the residual after each of ``layers``, with ``interventions`` active."""
    with steering(model, interventions):
        return pooled_means(model, texts, [f"blocks.{layer}.hook_resid_post" for layer in layers],
                            batch_size=config.batch_size, max_length=config.max_length, progress=progress,
                            description=description)


@dataclass(frozen=True)
class FittedProbe:
    """A probe fitted at the layer English dev accuracy chose."""

    layer: int
    """The residual layer it reads."""
    classifier: Pipeline
    """Standardisation then logistic regression."""
    dev_accuracy: dict[int, float]
    """English dev accuracy of the probe fitted at each layer tried."""

    def correct(self, features: Float[Tensor, "text d_model"], labels: Sequence[str]) -> np.ndarray:
        """Per text, whether the predicted class is ``labels``' (a bool array)."""
        return self.classifier.predict(features.numpy()) == np.asarray(labels)


def fit_probe(train: Float[Tensor, "layer text d_model"], train_labels: Sequence[str],
              dev: Float[Tensor, "layer dev_text d_model"], dev_labels: Sequence[str], layers: Sequence[int],
              config: ProbeConfig = ProbeConfig()) -> FittedProbe:
    """Fit one probe per layer on ``train``; keep the one with the best accuracy on ``dev`` (ties: deeper)."""
    fitted: dict[int, Pipeline] = {}
    accuracy: dict[int, float] = {}
    for index, layer in enumerate(layers):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=config.inverse_regularisation,
                                                                        max_iter=2000))
        classifier.fit(train[index].numpy(), list(train_labels))
        fitted[layer] = classifier
        accuracy[layer] = float((classifier.predict(dev[index].numpy()) == np.asarray(dev_labels)).mean())
    best = max(layers, key=lambda layer: (accuracy[layer], layer))
    return FittedProbe(best, fitted[best], accuracy)
