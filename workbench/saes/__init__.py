"""Sparse autoencoders per site, trained and loaded with SAELens (FOXP2 stage I's dictionaries).

    from workbench.saes import SAETrainConfig, train_saes, evaluate_sae_dir, load_sae_dir
    trained = train_saes(model, ["6.resid_post", "6.mlp_out"], "saes/")      # SAELens format, one dir per site
    reports = evaluate_sae_dir(model, "saes/")                               # FVU, L0, dead share, CE recovered
    saes = load_sae_dir("saes/", model)                                      # hook name -> sae_lens.SAE
    sae = load_pretrained_sae("gemma-scope-2b-pt-res", "layer_6/width_16k/average_l0_70", model)  # needs a hub
"""

from __future__ import annotations

from workbench.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ARCHITECTURES": "workbench.saes.config",
    "ActivationBuffer": "workbench.saes.data",
    "DEFAULT_LANGUAGES": "workbench.saes.config",
    "SAEError": "workbench.saes.config",
    "SAEEvalConfig": "workbench.saes.config",
    "SAETrainConfig": "workbench.saes.config",
    "TrainedSite": "workbench.saes.training",
    "build_training_sae": "workbench.saes.training",
    "capture": "workbench.saes.data",
    "ce_recovered": "workbench.saes.metrics",
    "check_sae_fits": "workbench.saes.io",
    "corpus_batches": "workbench.saes.data",
    "evaluate_sae_dir": "workbench.saes.quality",
    "evaluate_saes": "workbench.saes.quality",
    "fit_sae": "workbench.saes.training",
    "fvu": "workbench.saes.metrics",
    "grouped_fvu": "workbench.saes.metrics",
    "harvest_buffer": "workbench.saes.data",
    "load_pretrained_sae": "workbench.saes.io",
    "load_sae": "workbench.saes.io",
    "load_sae_dir": "workbench.saes.io",
    "quality_figure": "workbench.saes.quality",
    "quality_frame": "workbench.saes.quality",
    "residual_saes": "workbench.saes.cache",
    "reconstruction_metrics": "workbench.saes.metrics",
    "sae_entry": "workbench.saes.cache",
    "sae_hook_name": "workbench.saes.io",
    "shuffled_batches": "workbench.saes.data",
    "site_directories": "workbench.saes.io",
    "splice_fn": "workbench.saes.quality",
    "token_cross_entropy": "workbench.saes.quality",
    "train_saes": "workbench.saes.training",
}
"""Public name -> defining module; imported on first use so that the CLI sub-app stays light."""

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
