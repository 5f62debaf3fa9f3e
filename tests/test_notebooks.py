"""The notebooks are their jupytext sources, and they run top to bottom (tiny settings).

Each notebook's source is a jupytext percent-format script, ``notebooks/0N_name.py`` (reviewed as code; markdown
cells are ``# %% [markdown]`` comment blocks), paired with the committed ``notebooks/0N_name.ipynb`` (no outputs),
which is exactly what jupytext writes from the script. After editing a script, regenerate its notebook with::

    jupytext --sync notebooks/*.py                  # or: jupytext --update --to ipynb notebooks/*.py

Both keep each cell's id from the committed ``.ipynb`` (jupytext's text formats carry no cell ids; an edited cell
keeps its id, a new cell gets a new one once), so regenerating an unchanged script changes nothing. The header of
every script pins the pairing (``formats: ipynb,py:percent``) and drops jupytext's own version from the metadata,
so a jupytext upgrade does not churn the files either.

Each notebook is executed with ``nbclient`` in a fresh ``python3`` kernel (this interpreter's ipykernel) with
``WORKBENCH_NOTEBOOK_SMALL=1`` (tiny data, few tokens, tiny SAEs) and ``WORKBENCH_NOTEBOOK_OUT`` pointing into the
test's temporary directory; any cell error fails the test. The model cache (``~/.cache/workbench``) is the user's,
so the embedded model is not rebuilt and cached directions, spectra and harvests are reused.
"""

from __future__ import annotations

import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.combine import combine_inputs_with_outputs
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("01_quickstart.ipynb", "02_foxp2_walkthrough.ipynb", "03_neuron_study.ipynb",
             "04_feature_ablation.ipynb", "05_method_comparison.ipynb", "06_transfer.ipynb", "07_explore.ipynb")
PAIRING = "ipynb,py:percent"
CELL_TIMEOUT_S = 600
REGENERATE = "jupytext --sync notebooks/*.py"


def _from_source(script: Path, committed: nbformat.NotebookNode) -> str:
    """The ``.ipynb`` text jupytext writes from ``script``, keeping the committed notebook's cell ids (what
    ``jupytext --sync`` / ``--update`` does)."""
    notebook = combine_inputs_with_outputs(jupytext.read(script, fmt="py:percent"), committed, fmt="py:percent")
    text = jupytext.writes(notebook, fmt="ipynb")
    return text if text.endswith("\n") else text + "\n"  # jupytext.write ends a file with a newline


def test_every_notebook_has_its_jupytext_source():
    assert sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)
    assert sorted(path.name for path in NOTEBOOK_DIR.glob("*.py")) == sorted(
        Path(name).with_suffix(".py").name for name in NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_committed_notebook_is_what_jupytext_writes_from_its_script(name):
    path = NOTEBOOK_DIR / name
    script = path.with_suffix(".py")
    committed_text = path.read_text()
    committed = nbformat.reads(committed_text, as_version=4)
    nbformat.validate(committed)
    assert committed.metadata["jupytext"]["formats"] == PAIRING, f"{name} is not paired with its script"
    assert f"formats: {PAIRING}" in script.read_text().split("# ---", 2)[1], f"{script.name}: header lost its pairing"
    assert _from_source(script, committed) == committed_text, f"{name} differs from {script.name}: run {REGENERATE}"
    ids = [cell.id for cell in committed.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{name}: cell ids missing or repeated"
    code_cells = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells), f"{name} has outputs"


def test_every_notebook_starts_with_the_parameter_cell():
    for name in NOTEBOOKS:
        notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        first = next(cell for cell in notebook.cells if cell.cell_type == "code")
        for needle in ('SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"',
                       'OUT = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT", "figures/notebooks"))',
                       'os.environ.setdefault("HF_HUB_OFFLINE", "1")',
                       "import workbench as wb"):
            assert needle in first.source, (name, needle)


def test_notebooks_use_the_public_api():
    """``import workbench as wb`` and its attributes, never ``from workbench... import``."""
    for name in NOTEBOOKS:
        notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert "from workbench" not in cell.source, (name, cell.id)
                assert [line for line in cell.source.splitlines() if line.startswith("import workbench")] in (
                    [], ["import workbench as wb"]), (name, cell.id)


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
