"""Residual SAEs by layer, trained on first use and cached in the store (one entry per model, site and training
config), shared by every method that needs them (FOXP2, SAE-DiffMean, LangFIR).

Missing sites are trained together (one shared harvest) in a staging folder beside their entries, which an
interrupted training resumes from.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

from workbench.backends import Model
from workbench.models import model_key
from workbench.saes.config import SAETrainConfig
from workbench.saes.io import load_sae
from workbench.saes.training import train_saes
from workbench.sites import Site, resolve_site
from workbench.store import SAES, Entry, Store, digest


def sae_entry(model: Model, site: Site, config: SAETrainConfig) -> Entry:
    """The store entry of the SAE trained with ``config`` at ``site`` of ``model``."""
    key = {"model": model_key(model), "site": site.hook_name, "config": config.to_dict()}
    return Store().entry(SAES, key, scope=model_key(model), label=site.hook_name)


def residual_saes(model: Model, layers: Sequence[int], config: SAETrainConfig, *, progress: bool = True
                  ) -> dict[str, Any]:
    """Hook name -> SAE at ``hook_resid_post`` of each layer, trained on first use (missing sites together) and
    cached."""
    sites = [resolve_site(model, Site(layer, "resid_post")) for layer in layers]
    entries = {site.hook_name: sae_entry(model, site, config) for site in sites}
    todo = [site for site in sites if not entries[site.hook_name].ready()]
    if todo:
        staging = entries[todo[0].hook_name].path.parent / f".training-{digest(config.to_dict())}"
        trained = train_saes(model, todo, staging, config, progress=progress)
        for site in todo:
            entry = entries[site.hook_name]
            entry.clear()
            entry.path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(trained[site.hook_name].directory, entry.path)
            entry.commit()
    return {name: load_sae(entry.path, model) for name, entry in entries.items()}
