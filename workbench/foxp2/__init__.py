"""Neural FOXP2 end to end (METHODS section 3): stage II rows (:mod:`.pairs`), spectra, scores and windows
(:mod:`.spectra`), the window chosen on dev by J (:mod:`.window`), stage I SAE features at the window
(:mod:`.sae_features`), stage III the signed sparse shift (:mod:`.shift`) in a trust region (:mod:`.trust`), its
``beta`` chosen on dev with the strength (:mod:`.beta`), with an optional instruction gate (:mod:`.gate`); the
registered steering method ``foxp2`` and its controls (:mod:`.method`), the controls at matched cost
(:mod:`.matching`), and the stage-by-stage run with controls, baselines and a report, :func:`run_foxp2`.

    from workbench.foxp2 import run_foxp2, Foxp2Config
    result = run_foxp2(model, "hi", "figures/foxp2/hi")

Names are imported lazily, so ``import workbench.foxp2`` stays light.
"""

from workbench.lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(("PairDataConfig", "pair_representations", "response_representations"),
                    "workbench.foxp2.pairs"),
    **dict.fromkeys(("SpectralReport", "spectral_stage", "analyse_pairs", "spectra_figure",
                     "spectral_profile_figure"), "workbench.foxp2.spectra"),
    **dict.fromkeys(("WindowSearchConfig", "WindowSearch", "search_window", "candidate_windows"),
                    "workbench.foxp2.window"),
    **dict.fromkeys(("LocaliseConfig", "Localisation", "localise", "feature_spectra"),
                    "workbench.foxp2.sae_features"),
    **dict.fromkeys(("SignedShift", "LayerShift", "ShiftPlan", "positive_only", "negative_only", "random_support",
                     "rate_matched_latents", "vector_plan"), "workbench.foxp2.shift"),
    **dict.fromkeys(("TrustRegionConfig", "window_objective"), "workbench.foxp2.trust"),
    **dict.fromkeys(("BetaSearchConfig", "BetaSearch", "search_beta"), "workbench.foxp2.beta"),
    **dict.fromkeys(("MatchConfig", "MatchedStrength", "MATCHINGS", "match_controls", "rescale_to", "search_to"),
                    "workbench.foxp2.matching"),
    **dict.fromkeys(("Foxp2Method", "Foxp2MethodConfig", "Foxp2Error", "VARIANTS", "foxp2_plan", "shifted_window"),
                    "workbench.foxp2.method"),
    **dict.fromkeys(("GateProbe", "GateReport", "GatedSteer", "fit_gate", "gated"), "workbench.foxp2.gate"),
    **dict.fromkeys(("Foxp2Config", "Foxp2Result", "CONTROLS", "BASELINES"), "workbench.foxp2.config"),
    **dict.fromkeys(("run_foxp2",), "workbench.foxp2.pipeline"),
    **dict.fromkeys(("trust_region_figure", "comparison_figure", "results_frame"), "workbench.foxp2.report"),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

__all__ = list(_LAZY)
