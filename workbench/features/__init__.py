"""SAE language features: FOXP2 stage I (selectivity, causal lift, tracing to neurons) and LangFIR.

    from workbench.features import FeatureAnalysisConfig, run_feature_analysis, write_report
    report = run_feature_analysis(model, saes, FeatureAnalysisConfig(target="hi"))
    write_report(report, "features_hi/")                  # features.json, CSVs, figures, dashboard.html
    steer = FeatureSteer(sae, 123, scale=8.0, rule=PositionRule.parse("final+8"))   # a Steer: .hooks(model)
    ablate = FeatureAblation(sae, 123)                    # latent -> 0, SAE error term kept
    page = feature_card_html(card(model, sae, 123))       # one latent: languages, contexts, logits, ablation
"""

from __future__ import annotations

from workbench.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ABLATION_MODES": "workbench.features.steer",
    "AblationConfig": "workbench.features.ablation",
    "AblationResult": "workbench.features.ablation",
    "CardConfig": "workbench.views.contexts",
    "FeatureCard": "workbench.features.cards",
    "card": "workbench.features.cards",
    "feature_card": "workbench.features.cards",
    "feature_card_html": "workbench.features.cards",
    "EncodedTexts": "workbench.features.encode",
    "FeatureAblation": "workbench.features.steer",
    "FeatureAnalysisConfig": "workbench.features.analysis",
    "FeatureError": "workbench.features.scores",
    "FeatureReport": "workbench.features.analysis",
    "FeatureSteer": "workbench.features.steer",
    "LangFIRConfig": "workbench.features.analysis",
    "LatentEdit": "workbench.features.steer",
    "LiftConfig": "workbench.features.analysis",
    "MLPWriter": "workbench.features.tracing",
    "Snippet": "workbench.features.encode",
    "Tracing": "workbench.features.tracing",
    "TracingConfig": "workbench.features.analysis",
    "ablation_study": "workbench.features.ablation",
    "compact_neuron_set": "workbench.features.tracing",
    "decoder_vector": "workbench.features.steer",
    "decoder_vectors": "workbench.features.steer",
    "encode_texts": "workbench.features.encode",
    "encoder_directions": "workbench.features.steer",
    "firing_rate": "workbench.features.scores",
    "firing_rates": "workbench.features.encode",
    "joint_scores": "workbench.features.scores",
    "langfir_mask": "workbench.features.scores",
    "language_batches": "workbench.features.ablation",
    "lift_slopes": "workbench.features.scores",
    "measure_lift": "workbench.features.lift",
    "measure_ablation_lift": "workbench.features.lift",
    "mlp_writer": "workbench.features.tracing",
    "natural_activation": "workbench.features.scores",
    "neuron_contributions": "workbench.features.tracing",
    "random_token_batches": "workbench.features.encode",
    "report_tables": "workbench.features.analysis",
    "run_feature_analysis": "workbench.features.analysis",
    "selectivity": "workbench.features.scores",
    "top_neurons": "workbench.features.tracing",
    "top_positive": "workbench.features.scores",
    "top_snippets": "workbench.features.encode",
    "trace_features": "workbench.features.tracing",
    "traced_layers": "workbench.features.tracing",
    "verify_tracing": "workbench.features.tracing",
    "write_report": "workbench.features.analysis",
}
"""Public name -> defining module; imported on first use so that the CLI sub-app stays light."""

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, modules=("plots",))
