"""Cross-lingual transfer, measured: tasks built from the shipped corpus (``module`` classification with paired
English / target rows, few-shot ``translate``), English-only adaptation (a probe on frozen representations, LoRA,
masked LoRA on a neuron set), test-time neuron interventions (CLAS, SetGate on LAPE / 90p neurons and matched
random neurons), per-item scores compared between runs with paired intervals, and loaders for XNLI and
Belebele.

    from workbench.transfer import TransferConfig, run_transfer, write_transfer
    result = run_transfer(load_model(backend="hf"), TransferConfig(targets=("hi", "es")))  # rows and per-item scores
    write_transfer(result, TransferConfig(targets=("hi", "es")), "figures/transfer")
    compare_runs("figures/transfer-masked-lape", "figures/transfer-masked-random")  # paired, item by item

Names are imported on first use, so ``import workbench.transfer`` stays light.
"""

from workbench.lazy import lazy_exports

_LAZY = {
    "MODULES": "workbench.transfer.tasks", "ModuleExample": "workbench.transfer.tasks",
    "TranslationItem": "workbench.transfer.tasks", "module_rows": "workbench.transfer.tasks",
    "module_training_rows": "workbench.transfer.tasks", "translation_items": "workbench.transfer.tasks",
    "translation_prompt": "workbench.transfer.tasks", "TaskError": "workbench.transfer.tasks",
    "NliItem": "workbench.transfer.loaders", "BelebeleItem": "workbench.transfer.loaders",
    "load_xnli": "workbench.transfer.loaders", "load_belebele": "workbench.transfer.loaders",
    "ProbeConfig": "workbench.transfer.probe", "FittedProbe": "workbench.transfer.probe",
    "fit_probe": "workbench.transfer.probe", "pooled_features": "workbench.transfer.probe",
    "LoraTrainConfig": "workbench.transfer.lora", "attach_lora": "workbench.transfer.lora",
    "effective_weight": "workbench.transfer.lora", "train_classifier": "workbench.transfer.lora",
    "classify": "workbench.transfer.lora", "PooledClassifier": "workbench.transfer.lora",
    "fit_linear_head": "workbench.transfer.lora", "LinearHead": "workbench.transfer.lora",
    "TransferInterventionConfig": "workbench.transfer.interventions",
    "build_intervention": "workbench.transfer.interventions",
    "intervention_names": "workbench.transfer.interventions",
    "translate": "workbench.transfer.translate", "sentence_chrf": "workbench.transfer.translate",
    "corpus_bleu": "workbench.transfer.translate",
    "TransferConfig": "workbench.transfer.study", "TransferRow": "workbench.transfer.study",
    "TransferItem": "workbench.transfer.study", "TransferResult": "workbench.transfer.study",
    "ComparisonRow": "workbench.transfer.compare", "compare_items": "workbench.transfer.compare",
    "compare_runs": "workbench.transfer.compare", "comparison_table": "workbench.transfer.compare",
    "read_items": "workbench.transfer.compare", "write_comparison": "workbench.transfer.compare",
    "run_transfer": "workbench.transfer.run", "write_transfer": "workbench.transfer.report",
    "leaderboard": "workbench.transfer.report", "score_figure": "workbench.transfer.report",
    "gap_figure": "workbench.transfer.report", "adapted_copy": "workbench.backends",
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

__all__ = [*_LAZY]
