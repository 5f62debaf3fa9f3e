import subprocess
import sys

import pytest

MODULES = ["workbench.models", "workbench.activations", "workbench.generation", "workbench.evaluation",
           "workbench.evaluation.utility", "workbench.evaluation.runs", "workbench.demo", "workbench.cli",
           "workbench.corpus", "workbench.interventions", "workbench.directions", "workbench.methods",
           "workbench.prompting", "workbench.bench", "workbench.calibration", "workbench.store",
           "workbench.neurons", "workbench.neurons.pipeline", "workbench.neurons.cache", "workbench.neurons.methods",
           "workbench.neurons.cli", "workbench.saes", "workbench.saes.training", "workbench.saes.quality",
           "workbench.features", "workbench.features.lift", "workbench.features.tracing", "workbench.foxp2.report",
           "workbench.foxp2.gate", "workbench.foxp2.cli", "workbench.foxp2.sae_features"]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_on_its_own(module):
    """Each module imports in a fresh interpreter: no import cycle hidden by the order tests import in."""
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
