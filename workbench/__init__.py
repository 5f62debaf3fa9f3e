"""Language-steering workbench: study and steer which language a multilingual LLM speaks.

Built on TransformerLens hook points and SAELens dictionaries. The public face, imported lazily::

    import workbench as wb
    model = wb.load_model(backend="hf")                         # embedded Gemma 3 270M, offline
    prompts = [p.prompt for p in wb.corpus.prompts(split="eval", langs=["hi"])][:8]
    vector = wb.directions_for(model, "hi")["diffmean"].vector(4)
    edit = wb.Intervention("blocks.4.hook_resid_post", wb.AddVector(vector, 1.0), wb.PositionRule.parse("all"))
    with wb.steering(model, [edit]):                             # edits active inside the block
        print(wb.generate(model, prompts))
    metrics = wb.evaluate(model, prompts, "hi", hooks=edit.hooks(model))   # LID, dM, leakage, KL, NLL, relevance

Packages: ``wb.corpus``, ``wb.saes``, ``wb.features``, ``wb.neurons``, ``wb.foxp2``, ``wb.evaluation``,
``wb.plots``, ``wb.directions``, ``wb.views`` (language mass across steps, layers and positions),
``wb.transfer`` (cross-lingual transfer tasks, LoRA and masked LoRA); modules
``wb.calibration``, ``wb.bench``, ``wb.store``, ``wb.interventions``, ``wb.activations``, ``wb.languages``,
``wb.sites``.
"""

from workbench.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "workbench.models", "load_hf_model": "workbench.models", "ModelLoadError": "workbench.models",
    "Model": "workbench.backends",
    "Site": "workbench.sites", "get_language": "workbench.languages",
    "harvest": "workbench.activations", "HarvestConfig": "workbench.activations",
    "ActivationStats": "workbench.activations", "batch_texts": "workbench.activations",
    "sites_for": "workbench.sites",
    "Intervention": "workbench.interventions", "AddVector": "workbench.interventions",
    "PositionRule": "workbench.interventions", "steering": "workbench.interventions",
    "generate": "workbench.generation", "generate_recording": "workbench.generation",
    "QA_TEMPLATE": "workbench.evaluation",
    "evaluate": "workbench.evaluation", "EvaluationConfig": "workbench.evaluation",
    "SteeringMetrics": "workbench.evaluation",
    "get_method": "workbench.methods", "method_names": "workbench.methods", "register_method": "workbench.methods",
    "directions_for": "workbench.directions",
    "calibrate": "workbench.calibration", "CalibrationConfig": "workbench.calibration",
    "run_bench": "workbench.bench", "BenchConfig": "workbench.bench",
    "run_foxp2": "workbench.foxp2", "run_neurons": "workbench.neurons",
    "WorkbenchError": "workbench.errors",
}
_MODULES = ("corpus", "saes", "features", "neurons", "foxp2", "evaluation", "plots", "interventions", "activations",
            "languages", "sites", "models", "methods", "directions", "spectral", "calibration", "bench", "store",
            "views", "transfer")
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, _MODULES)

__all__ = ["__version__", *_EXPORTS, *_MODULES]
