"""Layering you can see: no module imports from a layer above its own, and there is no import cycle — function-local
imports included. The layers are the ones `docs/architecture.md` draws."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

LAYERS: dict[str, int] = {
    # 0 foundation: no workbench imports beyond this layer
    "workbench": 0, "workbench.errors": 0, "workbench.inputs": 0, "workbench.lazy": 0, "workbench.artifacts": 0,
    "workbench.store": 0, "workbench.store_archive": 0,
    "workbench.plots": 0, "workbench.spectral": 0, "workbench.evaluation.scores": 0, "workbench.evaluation.mass": 0,
    # 1 models, languages, data
    "workbench.languages": 1, "workbench.corpus": 1, "workbench.prompting": 1, "workbench.sites": 1,
    "workbench.hf_backend": 1, "workbench.backends": 1, "workbench.models": 1, "workbench.devices": 1,
    "workbench.embedded": 1, "workbench.static_export": 1,
    # 2 activations, interventions, generation, SAEs, token-level measurement
    "workbench.activations": 2, "workbench.histograms": 2, "workbench.readouts": 2, "workbench.interventions": 2,
    "workbench.generation": 2, "workbench.saes": 2, "workbench.distributed": 2,
    "workbench.neurons.masks": 2, "workbench.neurons.gating": 2, "workbench.neurons.data": 2,
    "workbench.neurons.interventions": 2, "workbench.features.scores": 2, "workbench.features.steer": 2,
    "workbench.features.encode": 2, "workbench.evaluation.lid": 2, "workbench.evaluation.token_sets": 2,
    "workbench.evaluation.utility": 2, "workbench.evaluation.relevance": 2, "workbench.evaluation.encoder": 2,
    # 3 analysis: pure functions over what layer 2 produces
    "workbench.directions.fit": 3, "workbench.neurons": 3, "workbench.features": 3, "workbench.foxp2.trust": 3,
    "workbench.foxp2.shift": 3, "workbench.views": 3,
    # 4 methods and the data they prepare
    "workbench.directions": 4, "workbench.directions.data": 4, "workbench.methods": 4, "workbench.neurons.cache": 4,
    "workbench.neurons.methods": 4, "workbench.features.analysis": 4, "workbench.foxp2": 4,
    "workbench.transfer.tasks": 1, "workbench.transfer.loaders": 1,
    "workbench.transfer.probe": 2, "workbench.transfer.lora": 2, "workbench.transfer.translate": 2,
    "workbench.transfer.interventions": 4,
    "workbench.features.sae_method": 4, "workbench.features.sae_diffmean": 4, "workbench.features.langfir": 4,
    # 5 evaluation and calibration
    "workbench.evaluation": 5, "workbench.evaluation.evaluate": 5, "workbench.evaluation.runs": 5,
    "workbench.calibration": 5, "workbench.transfer": 5, "workbench.export": 5,
    # 6 orchestration, reports, the command line
    "workbench.bench": 6, "workbench.demo": 6, "workbench.figures": 6, "workbench.cli": 6, "workbench.store_cli": 6,
    "workbench.harvest_cli": 6,
    "workbench.neurons.pipeline": 6, "workbench.foxp2.pipeline": 6, "workbench.foxp2.report": 6,
    "workbench.foxp2.config": 6, "workbench.transfer.report": 6,
    "workbench.transfer.run": 6, "workbench.model_options": 6, "workbench.export_cli": 6,
}
"""Module (or package prefix) -> layer; a module takes the layer of its longest listed prefix. CLI modules of any
package are at the top."""


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def layer(module: str) -> int | None:
    """The module's layer: its own entry, else its package's (the root package covers only itself)."""
    if module.endswith(".cli"):
        return 6
    prefix = module
    while prefix not in LAYERS and "." in prefix:
        prefix = prefix.rpartition(".")[0]
    return LAYERS[prefix] if prefix != "workbench" or module == "workbench" else None


def import_graph() -> dict[str, set[str]]:
    """Module -> the workbench modules it imports anywhere in its body (``from pkg import name`` counts as the
    submodule ``pkg.name`` when there is one, else as ``pkg``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("workbench") and target != name:
                    graph[name].add(target)
    return graph


def test_every_module_has_a_layer():
    unplaced = sorted(module for module in _modules() if layer(module) is None)
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
              for source, targets in import_graph().items() for target in sorted(targets)
              if layer(target) > layer(source)]
    assert not upward, "\n".join(upward)


def test_there_is_no_import_cycle():
    try:
        list(TopologicalSorter(import_graph()).static_order())
    except CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None


def test_only_the_backend_seam_knows_the_backends():
    """Backend-specific code lives in `workbench.backends` (and the loader): no other module imports the `hf`
    backend or asks `isinstance(model, HookedTransformer)`."""
    allowed = {"workbench.backends", "workbench.models", "workbench.hf_backend"}
    importers = sorted(source for source, targets in import_graph().items()
                       if "workbench.hf_backend" in targets and source not in allowed)
    assert not importers, f"import workbench.hf_backend only through workbench.backends: {importers}"
    branching = sorted(name for name, path in _modules().items() if name not in allowed
                       and "isinstance(model, HookedTransformer)" in path.read_text(encoding="utf-8"))
    assert not branching, f"move these backend branches into workbench.backends: {branching}"
