"""The notebooks run top to bottom (tiny settings) and match the script that generates them.

Each notebook is executed with ``nbclient`` in a fresh ``python3`` kernel (this interpreter's ipykernel) with
``WORKBENCH_NOTEBOOK_SMALL=1`` (tiny data, few tokens, tiny SAEs) and ``WORKBENCH_NOTEBOOK_OUT`` pointing into the
test's temporary directory; any cell error fails the test. The model cache (``~/.cache/workbench``) is the user's,
so the embedded model is not rebuilt and cached directions, spectra and harvests are reused.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("01_quickstart.ipynb", "02_foxp2_walkthrough.ipynb", "03_neuron_study.ipynb",
             "04_feature_ablation.ipynb", "05_method_comparison.ipynb")
CELL_TIMEOUT_S = 600


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_builder_reproduces_the_committed_notebooks():
    built = _builder().build_all()
    assert sorted(built) == sorted(NOTEBOOKS)
    assert sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name, notebook in built.items():
        committed = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        nbformat.validate(committed)
        expected = [(cell.cell_type, cell.source) for cell in notebook.cells]
        actual = [(cell.cell_type, cell.source) for cell in committed.cells]
        assert actual == expected, f"{name} differs from scripts/build_notebooks.py: run it to regenerate"


def test_every_notebook_starts_with_the_parameter_cell():
    for name in NOTEBOOKS:
        notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        first = next(cell for cell in notebook.cells if cell.cell_type == "code")
        for needle in ('SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"',
                       'OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))',
                       'os.environ.setdefault("HF_HUB_OFFLINE", "1")'):
            assert needle in first.source, (name, needle)


@pytest.mark.model
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_top_to_bottom_with_small_settings(name, tmp_path, monkeypatch):
    # the kernel inherits this environment: tiny settings, artifacts under tmp_path, the user's model cache
    monkeypatch.setenv("WORKBENCH_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("WORKBENCH_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(ROOT)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the cell and its traceback) on the first failing cell
    seconds = time.perf_counter() - started
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors, errors
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code_cells), "a code cell did not run"
    assert any(output.output_type in ("execute_result", "display_data")
               for cell in code_cells for output in cell.get("outputs", [])), "the notebook showed nothing"
    print(f"{name}: executed in {seconds:.1f} s")
