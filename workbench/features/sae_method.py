"""What the SAE steering methods (``sae-diffmean``, ``langfir``) share: residual SAEs by layer from the shared cache,
the grids, and one store entry per (model, target, source, layer, method settings) for the fitted tensors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from workbench.artifacts import atomic_write_json, load_tensors, save_tensors
from workbench.backends import Model
from workbench.interventions import ALL_POSITIONS, PositionRule
from workbench.methods import MethodError
from workbench.models import model_key
from workbench.saes.cache import residual_saes
from workbench.saes.config import SAETrainConfig
from workbench.store import SAE_STEERING, Store


@dataclass
class SaeMethodBase:
    """Residual SAEs at a grid of layers (trained on first use, shared with FOXP2 when the configs agree)."""

    sae: SAETrainConfig = field(default_factory=SAETrainConfig)
    """How each layer's residual SAE is trained."""
    layers: tuple[int, ...] | None = None
    """Candidate layers (None: every other layer from the third to four before the last, as the directions)."""
    strengths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    """Strengths calibration may pick (multiples of the fitted shift; the SAE reconstructs only part of the
    language difference, so the grid reaches further than DiffMean's)."""
    tunable: bool = True
    default_rule: PositionRule = ALL_POSITIONS
    _saes: dict[tuple[int, int], Any] = field(default_factory=dict, repr=False)

    def layer_grid(self, model: Model) -> list[int | None]:
        return list(self.layers or range(2, model.cfg.n_layers - 3, 2))

    def strength_grid(self) -> list[float]:
        return list(self.strengths)

    def sae_at(self, model: Model, layer: int | None) -> tuple[str, Any]:
        """Hook name and SAE of the residual stream after ``layer``."""
        if layer is None or not 0 <= layer < model.cfg.n_layers:
            raise MethodError(f"an SAE method needs a layer in 0..{model.cfg.n_layers - 1}, got {layer}")
        key = (id(model), layer)
        if key not in self._saes:
            self._saes[key] = next(iter(residual_saes(model, [layer], self.sae).items()))
        return self._saes[key]

    def fitted(self, model: Model, target: str, source: str, layer: int, settings: dict[str, Any],
               fit: Callable[[], tuple[dict[str, Tensor], dict[str, Any]]]) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors and record ``fit()`` makes for this (model, target, source, layer, SAE), given ``settings``
        (everything else the fit depends on), from the store when present."""
        key = {"model": model_key(model), "method": type(self).__name__, "target": target, "source": source,
               "layer": layer, "sae": self.sae.to_dict(), "settings": settings}
        entry = Store().entry(SAE_STEERING, key, scope=model_key(model),
                              label=f"{type(self).__name__}-{target}-L{layer}")
        if not entry.ready():
            tensors, record = fit()
            directory = entry.prepare()
            save_tensors(tensors, directory / "tensors.safetensors")
            atomic_write_json(directory / "record.json", record)
            entry.commit()
        return load_tensors(entry / "tensors.safetensors"), json.loads((entry / "record.json").read_text())
